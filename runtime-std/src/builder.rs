//! Building a host worker: where the server is, the credentials, the jobs,
//! and the checks made before any request.

use std::fmt;
use std::sync::Arc;

use outage_core::Config;
use outage_core::push::PushMode;

use crate::api::SharedToken;
use crate::handle::Worker;
use crate::http::{Http, SurfHttp};
use crate::job::{Handler, Job};
use crate::setup::read_token_file;
use crate::setup::{Credentials, StartError};

/// Builds a [`Worker`].
pub struct WorkerBuilder {
    url: String,
    credentials: Credentials,
    token: SharedToken,
    jobs: Vec<(Job, Arc<dyn Handler>)>,
    config: Config,
    max_response_bytes: usize,
    max_push_message: usize,
    seed: Option<u64>,
    observer: Option<crate::worker::Observer>,
    push: PushMode,
    ops: crate::ops::OpsConfig,
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
            max_push_message: crate::push::DEFAULT_MAX_MESSAGE,
            seed: None,
            observer: None,
            push: PushMode::Off,
            ops: Default::default(),
        }
    }

    /// Feed `metrics` (feature `metrics`): the core's counters and
    /// snapshot for Prometheus, and the worker's health and readiness
    /// ([`crate::metrics`]). The worker's driver then wakes at least every
    /// 5 s, so that a stalled driver shows.
    #[cfg(feature = "metrics")]
    pub fn metrics(mut self, metrics: &crate::metrics::Metrics) -> Self {
        self.ops.metrics = Some(metrics.clone());
        self
    }

    /// Tell systemd what the worker does ([`crate::systemd`]): `READY=1`
    /// once registered, `STATUS=` lines, `STOPPING=1`, and `WATCHDOG=1`
    /// from the driver's loop when the notifier has a watchdog interval.
    /// Usually `Notifier::from_env()`.
    pub fn systemd(mut self, notifier: crate::systemd::Notifier) -> Self {
        self.ops.systemd = Some(notifier);
        self
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

    /// Run up to `n` tasks at once (1 to 16; default 1), under one worker id
    /// and one heartbeat; each outcome is delivered (and held through an
    /// outage) on its own. Handlers must then cope with running
    /// concurrently. Shorthand for [`Config::concurrency`]; give it after
    /// [`WorkerBuilder::config`], which replaces the whole configuration.
    pub fn concurrency(mut self, n: u8) -> Self {
        self.config.concurrency = n;
        self
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

    /// The largest push message accepted (default
    /// [`DEFAULT_MAX_MESSAGE`](crate::push::DEFAULT_MAX_MESSAGE), 1 MiB;
    /// fragments count together): a larger one ends the push connection
    /// (the worker polls, and connects again on its backoff) before more of
    /// it is buffered.
    pub fn max_push_message(mut self, n: usize) -> Self {
        self.max_push_message = n;
        self
    }

    /// Also hand every event to `observer` (after it is logged): the
    /// application's own view of what the worker does — counters,
    /// dashboards, alerts. Called on the worker's task: keep it quick.
    pub fn on_event(mut self, observer: impl Fn(&outage_core::Event<'_>) + Send + Sync + 'static) -> Self {
        self.observer = Some(Arc::new(observer));
        self
    }

    /// Task-available push over Socket.IO (default [`PushMode::Off`]):
    /// with [`PushMode::Auto`] the worker listens for ZnDraw's
    /// `task_available` when the server offers Socket.IO (and polls quietly
    /// when it does not); [`PushMode::On`] keeps trying. A pushed event
    /// makes the worker claim at once; while push is connected an empty
    /// claim waits [`Config::push_poll_interval`] (60 s) instead of
    /// `poll_interval`; the claim over REST stays the authority, and a lost
    /// push connection only means polling again (see
    /// [`outage_core::push`]).
    pub fn push(mut self, mode: PushMode) -> Self {
        self.push = mode;
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
        let worker = self.spawn()?;
        worker.started().await?;
        Ok(worker)
    }

    /// [`WorkerBuilder::start`] without waiting: the worker starts on its
    /// own thread and the handle comes back at once, so that it can be
    /// stopped during its startup retries too (a signal then stops it
    /// cleanly: [`Worker::run_until_signal`]). [`Worker::started`] waits
    /// for the registration. Only a configuration that cannot work fails
    /// here.
    pub fn spawn(self) -> Result<Worker, StartError> {
        let http = SurfHttp::new(self.max_response_bytes).map_err(StartError::Client)?;
        self.spawn_with(http)
    }

    /// [`WorkerBuilder::start`] with another HTTP client.
    pub async fn start_with<H: Http>(self, http: H) -> Result<Worker<H>, StartError> {
        let worker = self.spawn_with(http)?;
        worker.started().await?;
        Ok(worker)
    }

    /// [`WorkerBuilder::spawn`] with another HTTP client.
    pub fn spawn_with<H: Http>(self, http: H) -> Result<Worker<H>, StartError> {
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
        let seed = self.seed.unwrap_or_else(default_seed);
        Worker::launch(crate::worker::Launch {
            http,
            url: self.url,
            token: self.token,
            credentials: self.credentials,
            jobs: self.jobs,
            config,
            seed,
            observer: self.observer,
            push: self.push,
            ops: self.ops,
            max_push_message: self.max_push_message,
        })
    }
}

/// A server URL the worker can use: `http://host[:port]` or
/// `https://host[:port]`, with a path prefix if the server is behind a
/// proxy path, the server's root without `/v1/joblib`.
fn check_url(url: &str) -> Result<(), String> {
    let parsed = surf::Url::parse(url).map_err(|e| format!("{url:?}: {e} (expected http://host:port)"))?;
    match parsed.scheme() {
        "http" | "https" => {}
        other => return Err(format!("{url:?}: scheme {other:?} (expected http://host:port)")),
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("{url:?}: no host (expected http://host:port)"));
    }
    if parsed.port() == Some(0) {
        return Err(format!(
            "{url:?}: port 0 is no server's port (expected http://host:port)"
        ));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Task;

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
            ("http://127.0.0.1:0", "port 0 is no server's port"),
            ("http://", "empty host"),
            ("ftp://h", "scheme"),
            ("http://h:1/v1/joblib", "without /v1/joblib"),
            ("http://h:1/v1/joblib/", "without /v1/joblib"),
            ("127.0.0.1:8765", "expected http://host:port"),
        ] {
            let e = check_url(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert_eq!(check_url("https://h"), Ok(()));
        assert_eq!(check_url("https://h:8443/zndraw"), Ok(()));
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

    /// `max_push_message` reaches the push listener: the bound it hands
    /// `Push::connect_bounded` (listen.rs reads `Shared::max_push_message`)
    /// is the builder's, and 1 MiB when not set.
    #[test]
    fn the_push_bound_reaches_the_listener() {
        let built = |b: WorkerBuilder| {
            let w = b
                .job(Job::new("r", "modifiers", "J"), |_t: Task| async { Ok(()) })
                .spawn()
                .expect("spawned (it retries its startup in the background)");
            let bound = w.push_bound();
            w.stop_now();
            bound
        };
        let b = || WorkerBuilder::new("http://127.0.0.1:1", "t0ken");
        assert_eq!(built(b()), crate::push::DEFAULT_MAX_MESSAGE);
        assert_eq!(crate::push::DEFAULT_MAX_MESSAGE, 1 << 20);
        assert_eq!(built(b().max_push_message(4_321)), 4_321);
    }

    #[test]
    fn builder_debug_redacts_the_token() {
        let b = WorkerBuilder::new("http://127.0.0.1:1", "s3cret-token");
        let shown = format!("{b:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }
}
