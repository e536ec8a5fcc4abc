//! The host worker: startup, the heartbeat and claim loops as async-std
//! tasks over one shared [`Machine`], and stopping.
//!
//! Every decision is the core's; this module only performs I/O, sleeps
//! until the deadlines the core hands out (or until woken), and spawns.

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration as StdDuration, Instant as StdInstant};

use async_std::channel::{Receiver, Sender, bounded};
use futures_lite::FutureExt;
use outage_core::protocol::TaskStatus;
use outage_core::{
    ClaimAction, Clock, Config, ConfigError, Duration, Event, HeartbeatAction, Instant, Machine,
    NO_HANDLER_ERROR, Phase, SHUTDOWN_ERROR, SplitMix64, StartupError, StartupRetry, StartupStep, Step,
    StopReason, Wake,
};

use crate::api::{Api, ApiError, SharedToken, Task};
use crate::http::{Http, SurfHttp};
use crate::{StdClock, emit};

/// A job the worker serves: where it is registered and its payload schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// Room (`@global` for all rooms; needs a superuser token).
    pub room: String,
    /// `modifiers`, `selections` or `analysis`.
    pub category: String,
    /// Job name.
    pub name: String,
    /// JSON schema of the payload.
    pub schema: serde_json::Value,
}

impl Job {
    /// A job with an empty schema (`{}`).
    pub fn new(room: impl Into<String>, category: impl Into<String>, name: impl Into<String>) -> Job {
        Job {
            room: room.into(),
            category: category.into(),
            name: name.into(),
            schema: serde_json::json!({}),
        }
    }

    /// Parse a full job name `room:category:name`, e.g. `@global:modifiers:Echo`.
    pub fn parse(full_name: &str) -> Result<Job, String> {
        let mut parts = full_name.splitn(3, ':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(room), Some(category), Some(name))
                if !room.is_empty() && !category.is_empty() && !name.is_empty() =>
            {
                Ok(Job::new(room, category, name))
            }
            _ => Err(format!(
                "job name {full_name:?} is not of the form room:category:name"
            )),
        }
    }

    /// Set the payload schema.
    pub fn with_schema(mut self, schema: serde_json::Value) -> Job {
        self.schema = schema;
        self
    }

    /// `room:category:name`
    pub fn full_name(&self) -> String {
        format!("{}:{}:{}", self.room, self.category, self.name)
    }
}

/// What a handler returns: `Ok` → `completed`, `Err(text)` → `failed` with
/// that text as the task's error.
pub type TaskResult = Result<(), String>;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Runs tasks of one job. Any `Fn(Task) -> impl Future<Output = TaskResult>`
/// is a handler.
pub trait Handler: Send + Sync + 'static {
    /// Run one task.
    fn run(&self, task: Task) -> BoxFuture<TaskResult>;
}

impl<F, Fut> Handler for F
where
    F: Fn(Task) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = TaskResult> + Send + 'static,
{
    fn run(&self, task: Task) -> BoxFuture<TaskResult> {
        Box::pin(self(task))
    }
}

/// Why a worker could not start.
#[derive(Debug)]
pub enum StartError {
    /// The configuration is inconsistent.
    Config(ConfigError),
    /// The server URL cannot be used; the text says why.
    Url(String),
    /// The token has characters a bearer token cannot hold (RFC 6750:
    /// letters, digits, `-._~+/`, then `=` padding).
    Token,
    /// No job was given.
    NoJobs,
    /// The token file cannot be read or holds no valid token.
    TokenFile(String),
    /// The HTTP client could not be built.
    Client(std::io::Error),
    /// Creating the worker or registering a job failed for good.
    Startup {
        /// Which request, how, after how many retries.
        error: StartupError,
        /// The server's explanation, if it sent one.
        detail: Option<String>,
    },
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Config(e) => write!(f, "{e}"),
            StartError::Url(why) => write!(f, "invalid server URL: {why}"),
            StartError::Token => f.write_str(
                "invalid token: a bearer token holds only letters, digits and -._~+/ (then = padding); \
                 check for spaces, line breaks or quotes",
            ),
            StartError::NoJobs => f.write_str("no job to serve: add at least one"),
            StartError::TokenFile(why) => write!(f, "invalid token file: {why}"),
            StartError::Client(e) => write!(f, "cannot set up the HTTP client: {e}"),
            StartError::Startup { error, detail } => {
                write!(f, "could not start the worker: {error}")?;
                if let Some(d) = detail {
                    write!(f, " ({d})")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for StartError {}

/// Where the worker's bearer token comes from.
#[derive(Clone)]
pub enum Credentials {
    /// A fixed token: a 401 stops the worker.
    Token(String),
    /// A file holding the token (trimmed), read at start and again when the
    /// server answers 401, for tokens renewed by something else.
    TokenFile(std::path::PathBuf),
    /// ZnDraw's login (`POST /v1/auth/jwt/login`): log in at start, and
    /// again when the server answers 401 (ZnDraw's tokens expire after an
    /// hour). A login refused stops the worker.
    Login {
        /// The user's email.
        user: String,
        /// The password.
        password: String,
    },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Token(_) => f.write_str("Token(<redacted>)"),
            Credentials::TokenFile(p) => f.debug_tuple("TokenFile").field(p).finish(),
            Credentials::Login { user, .. } => f
                .debug_struct("Login")
                .field("user", user)
                .field("password", &"<redacted>")
                .finish(),
        }
    }
}

/// The token in `path`, trimmed, if it is one.
fn read_token_file(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let token = text.trim();
    if !outage_core::protocol::is_valid_token(token) {
        return Err(format!("{} does not hold a valid token", path.display()));
    }
    Ok(token.to_owned())
}

/// Builds a [`Worker`].
pub struct WorkerBuilder {
    url: String,
    credentials: Credentials,
    token: SharedToken,
    jobs: Vec<(Job, Arc<dyn Handler>)>,
    config: Config,
    max_response_bytes: usize,
    seed: Option<u64>,
}

impl fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("url", &self.url)
            .field("credentials", &self.credentials)
            .field(
                "jobs",
                &self.jobs.iter().map(|(j, _)| j.full_name()).collect::<Vec<_>>(),
            )
            .field("config", &self.config)
            .finish()
    }
}

impl WorkerBuilder {
    /// A worker for the server at `url` (`http://host:port`) using `token`.
    pub fn new(url: impl Into<String>, token: impl Into<String>) -> Self {
        let token = token.into();
        WorkerBuilder {
            url: url.into(),
            token: SharedToken::new(&token),
            credentials: Credentials::Token(token),
            jobs: Vec::new(),
            config: Config::DEFAULT,
            max_response_bytes: 16 << 20,
            seed: None,
        }
    }

    /// Serve `job` with `handler`.
    pub fn job(mut self, job: Job, handler: impl Handler) -> Self {
        self.jobs.push((job, Arc::new(handler)));
        self
    }

    /// Where the token comes from (default: the fixed token given to
    /// [`WorkerBuilder::new`]). A token file or a login makes the worker
    /// renew its credentials on a 401 instead of stopping.
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        if let Credentials::Token(t) = &credentials {
            self.token = SharedToken::new(t);
        }
        self.credentials = credentials;
        self
    }

    /// The token the worker uses, as it is renewed: give it to whatever
    /// needs the current one (for example [`crate::command::Command::server`]).
    pub fn shared_token(&self) -> SharedToken {
        self.token.clone()
    }

    /// The core's configuration (intervals, limits, jitter, policies).
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// The largest response body accepted (default 16 MiB); a larger one is
    /// a failure (`Response too large for its buffer`), never a crash.
    pub fn max_response_bytes(mut self, n: usize) -> Self {
        self.max_response_bytes = n;
        self
    }

    /// Seed the jitter (default: from the time and process id).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Create the worker, register its jobs (retrying on the core's startup
    /// schedule) and start the heartbeat and claim loops.
    pub async fn start(self) -> Result<Worker, StartError> {
        let http = SurfHttp::new(self.max_response_bytes).map_err(StartError::Client)?;
        self.start_with(http).await
    }

    /// [`WorkerBuilder::start`] with another HTTP client.
    pub async fn start_with<H: Http>(self, http: H) -> Result<Worker<H>, StartError> {
        let mut config = self.config;
        config.renew_credentials = !matches!(self.credentials, Credentials::Token(_));
        config.validate().map_err(StartError::Config)?;
        check_url(&self.url).map_err(StartError::Url)?;
        match &self.credentials {
            Credentials::Token(t) if !outage_core::protocol::is_valid_token(t) => {
                return Err(StartError::Token);
            }
            Credentials::TokenFile(path) => {
                let token = read_token_file(path).map_err(StartError::TokenFile)?;
                self.token.set(&token);
            }
            _ => {}
        }
        if self.jobs.is_empty() {
            return Err(StartError::NoJobs);
        }
        let timeout = std_duration(config.request_timeout);
        let clock = StdClock::new();
        let seed = self.seed.unwrap_or_else(default_seed);
        let (wake_hb, wake_hb_rx) = bounded(1);
        let (wake_claim, wake_claim_rx) = bounded(1);
        let (halt, halt_rx) = bounded(1);
        let (finished, finished_rx) = bounded(1);
        let machine = Machine::new(config, clock.now(), 0).map_err(StartError::Config)?;
        let shared = Arc::new(Shared {
            api: Api::new(http, &self.url, self.token.clone(), timeout),
            config,
            machine: Mutex::new(machine),
            clock,
            worker_id: Mutex::new(String::new()),
            jobs: self.jobs,
            rng: Mutex::new(SplitMix64::new(seed)),
            wake_hb,
            wake_hb_rx,
            wake_claim,
            wake_claim_rx,
            halt,
            halt_rx,
            finished,
            finished_rx,
            live_loops: AtomicUsize::new(2),
            grace_deadline: Mutex::new(None),
            stats: StatsCounters::default(),
            disconnect: async_std::sync::Mutex::new(false),
            credentials: self.credentials,
        });
        if let Credentials::Login { user, password } = &shared.credentials {
            shared
                .with_startup_retry(true, || shared.api.login(user, password))
                .await
                .map_err(|(error, detail)| StartError::Startup { error, detail })?;
        }

        let id = shared
            .register_everything(true)
            .await
            .map_err(|(error, detail)| StartError::Startup { error, detail })?;
        emit(&Event::Registered {
            worker_id: &id,
            jobs: shared.jobs.len() as u32,
        });
        {
            // The loops' clocks start now, after a possibly long startup.
            let rand = shared.rand();
            *shared.machine() = Machine::new(config, shared.clock.now(), rand).map_err(StartError::Config)?;
        }
        let hb = async_std::task::spawn(heartbeat_loop(shared.clone()));
        let claim = async_std::task::spawn(claim_loop(shared.clone()));
        Ok(Worker {
            shared,
            tasks: Mutex::new(vec![hb, claim]),
        })
    }
}

/// A server URL the worker can use: `http://host[:port]` (or `https://`
/// with the `tls` feature), the server's root without `/v1/joblib`.
fn check_url(url: &str) -> Result<(), String> {
    let parsed = surf::Url::parse(url).map_err(|e| format!("{url:?}: {e} (expected http://host:port)"))?;
    match parsed.scheme() {
        "http" => {}
        "https" if cfg!(feature = "tls") => {}
        "https" => {
            return Err(format!(
                "{url:?}: https needs the `tls` feature (build with `--features tls`)"
            ));
        }
        other => return Err(format!("{url:?}: scheme {other:?} (expected http://host:port)")),
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("{url:?}: no host (expected http://host:port)"));
    }
    let path = parsed.path().trim_end_matches('/');
    if path.ends_with(outage_core::protocol::API_PREFIX) {
        return Err(format!(
            "{url:?}: give the server's root URL, without {}",
            outage_core::protocol::API_PREFIX
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(format!(
            "{url:?}: no query or fragment (expected http://host:port)"
        ));
    }
    Ok(())
}

fn default_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

pub(crate) fn std_duration(d: Duration) -> StdDuration {
    StdDuration::from_millis(d.as_millis())
}

/// What a worker has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// HTTP requests sent.
    pub requests: u64,
    /// Requests that failed (transport or unexpected status).
    pub failed_requests: u64,
    /// Requests retried once on a fresh connection after meeting a
    /// keep-alive connection the server had closed.
    pub stale_connection_retries: u64,
    /// Tasks whose handler succeeded.
    pub tasks_completed: u64,
    /// Tasks whose handler failed (or panicked, or overran a shutdown).
    pub tasks_failed: u64,
    /// Outcomes held through an outage.
    pub outcomes_held: u64,
    /// Outages survived.
    pub recoveries: u64,
}

#[derive(Debug, Default)]
struct StatsCounters {
    tasks_completed: AtomicU64,
    tasks_failed: AtomicU64,
    outcomes_held: AtomicU64,
    recoveries: AtomicU64,
    last_recovery: Mutex<Option<StdInstant>>,
}

struct Shared<H> {
    api: Api<H>,
    config: Config,
    machine: Mutex<Machine>,
    clock: StdClock,
    worker_id: Mutex<String>,
    jobs: Vec<(Job, Arc<dyn Handler>)>,
    rng: Mutex<SplitMix64>,
    wake_hb: Sender<()>,
    wake_hb_rx: Receiver<()>,
    wake_claim: Sender<()>,
    wake_claim_rx: Receiver<()>,
    /// Closed on a hard stop: every await racing it ends at once.
    halt: Sender<()>,
    halt_rx: Receiver<()>,
    /// Closed when both loops have exited.
    finished: Sender<()>,
    finished_rx: Receiver<()>,
    live_loops: AtomicUsize,
    /// When a graceful stop gives up on the running task.
    grace_deadline: Mutex<Option<StdInstant>>,
    stats: StatsCounters,
    disconnect: async_std::sync::Mutex<bool>,
    credentials: Credentials,
}

enum Run<T> {
    Done(T),
    Overrun,
    Halted,
}

impl<H: Http> Shared<H> {
    fn machine(&self) -> MutexGuard<'_, Machine> {
        self.machine.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn worker_id(&self) -> String {
        self.worker_id.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The entropy the core asks its caller for.
    fn rand(&self) -> u32 {
        self.rng.lock().unwrap_or_else(|e| e.into_inner()).next_u32()
    }

    fn now(&self) -> Instant {
        self.clock.now()
    }

    /// Log a step's events and wake whom it says.
    fn apply<A>(&self, step: &Step<A>) {
        for e in step.events.iter() {
            emit(e);
            match e {
                Event::OutcomeHeld => {
                    self.stats.outcomes_held.fetch_add(1, Ordering::Relaxed);
                }
                Event::Recovered { .. } => {
                    self.stats.recoveries.fetch_add(1, Ordering::Relaxed);
                    *self.stats.last_recovery.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(StdInstant::now());
                }
                _ => {}
            }
        }
        match step.wake {
            Wake::Nobody => {}
            Wake::Claim => {
                let _ = self.wake_claim.try_send(());
            }
            Wake::Heartbeat => {
                let _ = self.wake_hb.try_send(());
            }
            Wake::Everyone | Wake::Halt => {
                if step.wake == Wake::Halt {
                    self.halt.close();
                }
                let _ = self.wake_hb.try_send(());
                let _ = self.wake_claim.try_send(());
            }
        }
    }

    fn halted(&self) -> bool {
        self.halt.is_closed()
    }

    /// `fut`, unless the worker halts first.
    async fn or_halt<T>(&self, fut: impl Future<Output = T>) -> Option<T> {
        async { Some(fut.await) }
            .or(async {
                let _ = self.halt_rx.recv().await;
                None
            })
            .await
    }

    /// Sleep until `t` or until woken; false if the worker halted.
    async fn sleep_until(&self, t: Instant, wake: &Receiver<()>) -> bool {
        let wait = std_duration(t - self.now());
        let woken = async {
            let _ = wake.recv().await;
        };
        self.or_halt(async_std::future::timeout(wait, woken))
            .await
            .is_some()
            && !self.halted()
    }

    /// Run a handler, unless the worker halts or a graceful stop's grace
    /// period runs out first.
    async fn run_task<T>(&self, fut: impl Future<Output = T>) -> Run<T> {
        let overrun = async {
            loop {
                let deadline = *self.grace_deadline.lock().unwrap_or_else(|e| e.into_inner());
                match deadline {
                    Some(d) if StdInstant::now() >= d => return,
                    Some(d) => {
                        let _ = async_std::future::timeout(d - StdInstant::now(), self.wake_claim_rx.recv())
                            .await;
                    }
                    None => {
                        let _ = self.wake_claim_rx.recv().await;
                    }
                }
            }
        };
        let raced = async { Run::Done(fut.await) }.or(async {
            overrun.await;
            Run::Overrun
        });
        match self.or_halt(raced).await {
            Some(r) => r,
            None => Run::Halted,
        }
    }

    /// Create the worker and register every job. At startup each request is
    /// retried on the startup schedule; when registering again (`startup`
    /// false) the first failure is returned to the claim loop, whose backoff
    /// applies. The new id replaces the current one only once every job is
    /// registered: until then the loops keep the id they had.
    async fn register_everything(&self, startup: bool) -> Result<String, (StartupError, Option<String>)> {
        let id = self
            .with_startup_retry(startup, || self.api.create_worker())
            .await?;
        for (job, _) in &self.jobs {
            self.with_startup_retry(startup, || self.api.register_job(job, &id))
                .await?;
        }
        *self.worker_id.lock().unwrap_or_else(|e| e.into_inner()) = id.clone();
        Ok(id)
    }

    async fn with_startup_retry<T, F, Fut>(
        &self,
        retry: bool,
        mut call: F,
    ) -> Result<T, (StartupError, Option<String>)>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        let mut schedule = StartupRetry::new();
        loop {
            let started = self.now();
            let err = match call().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            if !retry {
                let error = StartupError {
                    what: err.endpoint,
                    error: err.failure,
                    retries: 0,
                };
                return Err((error, err.detail));
            }
            let (step, event) =
                schedule.on_failure(&self.config, err.endpoint, started, err.failure, self.rand());
            emit(&event);
            match step {
                StartupStep::RetryAt(t) => async_std::task::sleep(std_duration(t - self.now())).await,
                StartupStep::GiveUp(error) => return Err((error, err.detail)),
            }
        }
    }

    /// Renew the credentials: log in again, or read the token file again.
    async fn renew_credentials(&self) -> Result<(), outage_core::Failure> {
        match &self.credentials {
            Credentials::Login { user, password } => {
                self.api.login(user, password).await.map_err(|e| e.failure)
            }
            Credentials::TokenFile(path) => match read_token_file(path) {
                Ok(token) => {
                    self.api.set_token(&token);
                    Ok(())
                }
                Err(why) => {
                    emit(&Event::TokenFileUnusable { why: &why });
                    Err(outage_core::Failure::status(401))
                }
            },
            // The core asks only when the credentials can be renewed.
            Credentials::Token(_) => Err(outage_core::Failure::status(401)),
        }
    }

    fn handler_for(&self, job_name: &str) -> Option<Arc<dyn Handler>> {
        self.jobs
            .iter()
            .find(|(j, _)| j.full_name() == job_name)
            .map(|(_, h)| h.clone())
    }

    fn loop_exited(&self) {
        if self.live_loops.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.finished.close();
        }
    }
}

async fn heartbeat_loop<H: Http>(sh: Arc<Shared<H>>) {
    loop {
        let action = sh.machine().heartbeat_poll(sh.now());
        match action {
            HeartbeatAction::Wait(t) => {
                if !sh.sleep_until(t, &sh.wake_hb_rx).await {
                    break;
                }
            }
            HeartbeatAction::Beat => {
                let id = sh.worker_id();
                let started = sh.now();
                let Some(result) = sh.or_halt(sh.api.heartbeat(&id)).await else {
                    break;
                };
                let step = sh
                    .machine()
                    .on_heartbeat(started, sh.now(), result.map_err(|e| e.failure));
                sh.apply(&step);
            }
            HeartbeatAction::Login => {
                let started = sh.now();
                let Some(result) = sh.or_halt(sh.renew_credentials()).await else {
                    break;
                };
                let rand = sh.rand();
                let step = sh.machine().on_login(started, sh.now(), result, rand);
                sh.apply(&step);
            }
            HeartbeatAction::Expire => {
                let step = sh.machine().on_expired(sh.now());
                sh.apply(&step);
            }
            HeartbeatAction::Stop(_) => break,
        }
    }
    sh.loop_exited();
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    let msg = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    format!("handler panicked: {msg}")
}

async fn claim_loop<H: Http>(sh: Arc<Shared<H>>) {
    // The claimed task and, once run, its outcome: at most one of each,
    // because the core never claims while an outcome waits.
    let mut current: Option<Task> = None;
    let mut outcome: Option<TaskResult> = None;
    // The id given up after an ambiguous claim, until it is deleted.
    let mut retired: Option<String> = None;
    loop {
        let now = sh.now();
        let action = sh.machine().claim_poll(now);
        let step = match action {
            ClaimAction::Wait(t) => {
                if !sh.sleep_until(t, &sh.wake_claim_rx).await {
                    break;
                }
                continue;
            }
            ClaimAction::Stop(_) => break,
            ClaimAction::Expire => {
                let step = sh.machine().on_expired(now);
                sh.apply(&step);
                continue;
            }
            ClaimAction::Claim => {
                let id = sh.worker_id();
                let Some(result) = sh.or_halt(sh.api.claim(&id)).await else {
                    break;
                };
                let result = result.map(|task| {
                    let got = task.is_some();
                    current = task;
                    got
                });
                let rand = sh.rand();
                sh.machine()
                    .on_claim(now, sh.now(), result.map_err(|e| e.failure), rand)
            }
            ClaimAction::Start => {
                let Some(task) = current.as_ref() else { break };
                let Some(result) = sh
                    .or_halt(sh.api.set_status(&task.id, TaskStatus::Running, None))
                    .await
                else {
                    break;
                };
                let rand = sh.rand();
                sh.machine()
                    .on_started(now, sh.now(), result.map_err(|e| e.failure), rand)
            }
            ClaimAction::Execute => {
                // The handler owns the task (its payload moves, no copy);
                // the loop keeps its id and names for the delivery.
                let Some(task) = current.take() else { break };
                current = Some(task.header());
                let begun = StdInstant::now();
                let result = match sh.handler_for(&task.job_name) {
                    None => Err(NO_HANDLER_ERROR.into()),
                    Some(handler) => match sh
                        .run_task(AssertUnwindSafe(handler.run(task)).catch_unwind())
                        .await
                    {
                        Run::Done(Ok(r)) => r,
                        Run::Done(Err(panic)) => Err(panic_text(&*panic)),
                        Run::Overrun => Err(SHUTDOWN_ERROR.into()),
                        Run::Halted => break,
                    },
                };
                let counter = match &result {
                    Ok(()) => &sh.stats.tasks_completed,
                    Err(_) => &sh.stats.tasks_failed,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                if let Some(t) = current.as_ref() {
                    emit(&Event::TaskFinished {
                        task_id: &t.id,
                        job: &t.job_name,
                        room: &t.room_id,
                        took: Duration::from_millis(begun.elapsed().as_millis() as u64),
                        error: result.as_ref().err().map(String::as_str),
                    });
                }
                let ok = result.is_ok();
                outcome = Some(result);
                sh.machine().on_executed(sh.now(), ok)
            }
            ClaimAction::Deliver => {
                let (Some(task), Some(result)) = (current.as_ref(), outcome.as_ref()) else {
                    break;
                };
                let (status, error) = match result {
                    Ok(()) => (TaskStatus::Completed, None),
                    Err(text) => (TaskStatus::Failed, Some(text.as_str())),
                };
                let Some(result) = sh.or_halt(sh.api.set_status(&task.id, status, error)).await else {
                    break;
                };
                let rand = sh.rand();
                sh.machine()
                    .on_delivered(now, sh.now(), result.map_err(|e| e.failure), rand)
            }
            ClaimAction::Register => {
                let old = sh.worker_id();
                let Some(result) = sh.or_halt(sh.register_everything(false)).await else {
                    break;
                };
                let result = result.map(drop).map_err(|(e, _)| (e.what, e.error));
                let rand = sh.rand();
                let step = sh.machine().on_registered(now, sh.now(), result, rand);
                if sh.machine().is_retiring() {
                    retired = Some(old);
                }
                step
            }
            ClaimAction::Retire => {
                let result = match retired.as_deref() {
                    Some(old) => {
                        let timeout = std_duration(sh.config.disconnect_timeout);
                        let Some(result) = sh.or_halt(sh.api.disconnect(old, timeout)).await else {
                            break;
                        };
                        result.map_err(|e| e.failure)
                    }
                    None => Ok(()),
                };
                let rand = sh.rand();
                let step = sh.machine().on_retired(now, sh.now(), result, rand);
                if !sh.machine().is_retiring() {
                    retired = None;
                }
                step
            }
            ClaimAction::Verify => {
                let Some(task) = current.as_ref() else { break };
                let id = sh.worker_id();
                let Some(result) = sh.or_halt(sh.api.get_task(&task.id, &id)).await else {
                    break;
                };
                let rand = sh.rand();
                sh.machine()
                    .on_verified(now, sh.now(), result.map_err(|e| e.failure), rand)
            }
        };
        if sh.machine().phase() == Phase::Idle {
            current = None;
            outcome = None;
        }
        sh.apply(&step);
    }
    sh.loop_exited();
}

/// A running worker. Its loops run on async-std tasks until it stops; call
/// [`Worker::disconnect`] (or [`Worker::run_until_signal`]) to stop it and
/// delete it from the server.
pub struct Worker<H: Http = SurfHttp> {
    shared: Arc<Shared<H>>,
    tasks: Mutex<Vec<async_std::task::JoinHandle<()>>>,
}

/// Dropping a worker halts its loops at once (without deleting it from the
/// server: call [`Worker::disconnect`] first for that), so no loop outlives
/// its handle.
impl<H: Http> Drop for Worker<H> {
    fn drop(&mut self) {
        self.shared.halt.close();
        let _ = self.shared.wake_hb.try_send(());
        let _ = self.shared.wake_claim.try_send(());
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

impl<H: Http> Worker<H> {
    /// The worker's id on the server (it changes if it registers again).
    pub fn id(&self) -> String {
        self.shared.worker_id()
    }

    /// Why it stopped, once it has.
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.shared.machine().stop_reason()
    }

    /// True once both loops have exited.
    pub fn is_finished(&self) -> bool {
        self.shared.finished.is_closed()
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        let c = &self.shared.api.counters;
        let s = &self.shared.stats;
        Stats {
            requests: c.requests.load(Ordering::Relaxed),
            failed_requests: c.failures.load(Ordering::Relaxed),
            stale_connection_retries: c.stale_retries.load(Ordering::Relaxed),
            tasks_completed: s.tasks_completed.load(Ordering::Relaxed),
            tasks_failed: s.tasks_failed.load(Ordering::Relaxed),
            outcomes_held: s.outcomes_held.load(Ordering::Relaxed),
            recoveries: s.recoveries.load(Ordering::Relaxed),
        }
    }

    /// When the last outage ended.
    pub fn last_recovery(&self) -> Option<StdInstant> {
        *self
            .shared
            .stats
            .last_recovery
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Wait until the worker stops by itself (outage too long, registration
    /// lost) or is stopped, and both loops have exited.
    pub async fn wait(&self) -> StopReason {
        let _ = self.shared.finished_rx.recv().await;
        self.join_tasks().await;
        self.stop_reason().unwrap_or(StopReason::Requested)
    }

    async fn join_tasks(&self) {
        let tasks: Vec<_> = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for t in tasks {
            t.await;
        }
    }

    /// Stop now and delete the worker from the server. A running task is
    /// reported `failed` ("worker shutting down"). Idempotent.
    pub async fn disconnect(&self) {
        self.shutdown(StdDuration::ZERO).await;
    }

    /// Stop claiming; give a running task up to `grace` to finish (else it is
    /// reported `failed` with "worker shutting down"); wait for both loops;
    /// delete the worker (a failure there is only logged). Idempotent: later
    /// calls wait for the first to finish.
    pub async fn shutdown(&self, grace: StdDuration) {
        let mut done = self.shared.disconnect.lock().await;
        if *done {
            return;
        }
        *self
            .shared
            .grace_deadline
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(StdInstant::now() + grace);
        let step = self.shared.machine().request_stop();
        self.shared.apply(&step);
        // A stuck request or handler must not hold the shutdown forever.
        let limit = grace + std_duration(self.shared.config.request_timeout) + StdDuration::from_secs(1);
        if async_std::future::timeout(limit, self.shared.finished_rx.recv())
            .await
            .is_err()
        {
            self.shared.halt.close();
            let _ = self.shared.finished_rx.recv().await;
        }
        self.join_tasks().await;
        let reason = self.stop_reason();
        let id = self.id();
        let forgotten = matches!(reason, Some(StopReason::RegistrationLost(_)));
        if !id.is_empty() && !forgotten {
            let timeout = std_duration(self.shared.config.disconnect_timeout);
            match self.shared.api.disconnect(&id, timeout).await {
                Ok(()) => emit(&Event::Disconnected { worker_id: &id }),
                Err(e) => emit(&Event::DisconnectFailed {
                    worker_id: &id,
                    error: e.failure,
                }),
            }
        }
        *done = true;
    }

    /// Give up the grace period of a stop under way: a running task is
    /// abandoned at once and reported failed ("worker shutting down"). What
    /// a second Ctrl-C does.
    pub fn stop_now(&self) {
        let mut deadline = self
            .shared
            .grace_deadline
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if deadline.is_some() {
            *deadline = Some(StdInstant::now());
            emit(&Event::StopNow);
        }
        drop(deadline);
        let _ = self.shared.wake_claim.try_send(());
    }

    /// Serve until SIGINT or SIGTERM (or until the worker stops by itself),
    /// then [`Worker::shutdown`] with `grace`; a second signal during the
    /// shutdown stops at once ([`Worker::stop_now`]). Returns why it
    /// stopped.
    pub async fn run_until_signal(&self, grace: StdDuration) -> StopReason {
        use futures_lite::StreamExt;
        let signals =
            signal_hook_async_std::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM]);
        match signals {
            Ok(mut signals) => {
                let handle = signals.handle();
                let got_signal = async { signals.next().await.is_some() }.or(async {
                    let _ = self.shared.finished_rx.recv().await;
                    false
                });
                // The stop itself is logged by the core ("Stop requested").
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
            }
            Err(_) => {
                emit(&Event::SignalsUnavailable);
                let _ = self.shared.finished_rx.recv().await;
            }
        }
        self.shutdown(grace).await;
        self.stop_reason().unwrap_or(StopReason::Requested)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names() {
        let j = Job::parse("@global:modifiers:Echo").unwrap();
        assert_eq!(
            (j.room.as_str(), j.category.as_str(), j.name.as_str()),
            ("@global", "modifiers", "Echo")
        );
        assert_eq!(j.full_name(), "@global:modifiers:Echo");
        assert!(Job::parse("nope").is_err());
        assert!(Job::parse("a::b").is_err());
    }

    #[test]
    fn urls_are_checked_at_startup() {
        for ok in [
            "http://127.0.0.1:8765",
            "http://localhost",
            "http://[::1]:80/",
            "http://h:1/prefix",
        ] {
            assert_eq!(check_url(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("http://[::1", "invalid IPv6"),
            ("http://127.0.0.1:99999", "invalid port"),
            ("http://", "empty host"),
            ("ftp://h", "scheme"),
            ("http://h:1/v1/joblib", "without /v1/joblib"),
            ("http://h:1/v1/joblib/", "without /v1/joblib"),
            ("127.0.0.1:8765", "expected http://host:port"),
        ] {
            let e = check_url(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        if !cfg!(feature = "tls") {
            assert!(check_url("https://h").unwrap_err().contains("--features tls"));
        }
    }

    #[test]
    fn bad_tokens_are_refused_before_any_request() {
        for token in ["sekr1t x", "sekr1t\u{e9}", "sekr1t\r\nInjected: 1", ""] {
            let b = WorkerBuilder::new("http://127.0.0.1:1", token)
                .job(Job::new("r", "modifiers", "J"), |_t: Task| async { Ok(()) });
            let err = async_std::task::block_on(b.start()).unwrap_err();
            assert!(matches!(err, StartError::Token), "{token:?}: {err}");
            assert!(
                !err.to_string().contains("sekr1t"),
                "the message never shows the token"
            );
        }
    }

    #[test]
    fn builder_debug_redacts_the_token() {
        let b = WorkerBuilder::new("http://127.0.0.1:1", "s3cret-token");
        let shown = format!("{b:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn panic_messages_become_error_texts() {
        let p: Box<dyn std::any::Any + Send> = Box::new("boom");
        assert_eq!(panic_text(&*p), "handler panicked: boom");
        let p: Box<dyn std::any::Any + Send> = Box::new(String::from("bad"));
        assert_eq!(panic_text(&*p), "handler panicked: bad");
    }
}
