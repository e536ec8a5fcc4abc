//! `outage-worker`: serve ZnDraw jobs with external commands, riding out
//! job-server outages. See `outage-worker --help`.

use std::process::ExitCode;

#[path = "../cli/mod.rs"]
mod cli;

use clap::Parser;
use outage_core::Fatal;
use outage_runtime_std::command::Command;
use outage_runtime_std::process::LongLived;
use outage_runtime_std::{
    Config, Credentials, Duration, Jitter, Job, OnRegistrationLost, PushMode, StopReason, WorkerBuilder,
};

const ABOUT: &str = "Serve ZnDraw jobs with external commands, riding out job-server outages.";

const LONG_ABOUT: &str = "\
Serve ZnDraw jobs with external commands, riding out job-server outages.

outage-worker registers with a ZnDraw job server (zndraw-joblib, REST under
/v1/joblib), claims tasks of the jobs you name and runs one command per task:

  * the task's payload is written to the command's stdin, byte for byte as
    the server sent it (JSON);
  * its environment is the worker's without credentials (OUTAGE_TOKEN,
    ZNDRAW_TOKEN, ZNDRAW_PASSWORD are removed), plus ZNDRAW_URL, ZNDRAW_TOKEN
    (the worker's token), ZNDRAW_ROOM (the task's room), ZNDRAW_TASK_ID and
    ZNDRAW_JOB, so that `ZnDraw()` in a Python command talks to the task's
    room (OUTAGE_TASK_ID, OUTAGE_JOB, OUTAGE_ROOM are set too);
  * it runs in its own process group; the task ends when it exits (a process
    it leaves behind does not hold the task);
  * exit status 0 marks the task completed; any other marks it failed, with
    the end of the command's stderr as the task's error; --task-timeout
    fails a task that runs too long.

The command runs directly, never through a shell: its words are split as a
shell would split them ('a b', \"a b\" and a\\ b are one word), but no
shell runs it: no variables, globs, pipes or redirections. Wrap anything
more complex in a script.

When the server goes away the worker keeps trying with capped, jittered
backoff, warns with a countdown (\"Server unreachable — retrying (30s/120s
elapsed)\"), keeps a finished task's outcome until the server is back, and
stops with one error line if the outage lasts longer than
--max-unreachable. Ctrl-C (or SIGTERM) stops claiming, lets the running task
finish within --grace, and removes the worker from the server; a second
Ctrl-C stops at once. A command still running when its grace is over gets
SIGTERM (its whole process group), then SIGKILL 2 s later, and its task is
reported failed (\"worker shutting down\").

Log level: RUST_LOG (default: info for the worker's own lines).

Credentials: --token (a 401 stops the worker), --token-file (read again on
401), or --user (ZnDraw's login; the worker logs in again when its token
expires, once per 401, and stops if the new token is refused too) with the
password from --password-file, else systemd's credential
$CREDENTIALS_DIRECTORY/password, else ZNDRAW_PASSWORD. The token never
appears in a log line.

Environment: OUTAGE_SERVER or ZNDRAW_URL for --server; OUTAGE_TOKEN or
ZNDRAW_TOKEN for --token; ZNDRAW_USER and ZNDRAW_PASSWORD for --user (ZnDraw's
own client reads the ZNDRAW_ ones).

Operating it: --metrics-addr 127.0.0.1:9100 serves /metrics (Prometheus),
/healthz (the worker's driver is alive) and /readyz (registered and the
server answers). Under systemd (Type=notify) it reports READY=1 once
registered, STATUS= lines with the outage countdown, WATCHDOG=1 while its
loop runs (WatchdogSec=), STOPPING=1. Credentials from LoadCredential= in
$CREDENTIALS_DIRECTORY: `password` is --user's password unless
--password-file gives one (it beats ZNDRAW_PASSWORD: the unit's credential
is deliberate, a variable may be inherited); `token` is used, like
--token-file, when no flag or variable gives credentials. `outage-worker
completions bash` and `outage-worker man` write shell completions and the
man page.

Exit status: 0 stopped on request; 1 server unreachable for too long (or at
startup); 2 usage or configuration error; 3 credentials refused; 4
registration lost or refused; 5 a --serve handler could not be started.";

const EXAMPLES: &str = "\
Examples:
  outage-worker --server http://127.0.0.1:8765 --token secret \\
      --job '@global:modifiers:Echo=cat'
  OUTAGE_TOKEN=secret outage-worker --job 'room1:analysis:Count=./count.py --fast' \\
      --schema 'room1:analysis:Count=count.schema.json'";

#[derive(Parser, Debug)]
#[command(name = "outage-worker", version, about = ABOUT, long_about = LONG_ABOUT, after_long_help = EXAMPLES)]
#[command(subcommand_negates_reqs = true, args_conflicts_with_subcommands = true)]
struct Cli {
    /// Not serving: write shell completions or the man page.
    #[command(subcommand)]
    command: Option<Sub>,

    /// URL of the ZnDraw job server (without /v1/joblib). Also read from
    /// OUTAGE_SERVER, then ZNDRAW_URL; default http://127.0.0.1:8765.
    #[arg(long, env = "OUTAGE_SERVER", value_name = "URL")]
    server: Option<String>,

    /// Trust the CA certificates in this PEM file too, for an https server
    /// with a private CA or a self-signed certificate (the platform's roots,
    /// and SSL_CERT_FILE / SSL_CERT_DIR, are trusted anyway).
    #[arg(long, value_name = "FILE")]
    ca_file: Option<std::path::PathBuf>,

    /// Bearer token for the server. Also read from OUTAGE_TOKEN, then
    /// ZNDRAW_TOKEN. A 401 stops the worker: for tokens that expire use
    /// --token-file or --user.
    #[arg(long, env = "OUTAGE_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    token: Option<String>,

    /// A file holding the token, read at start and again whenever the
    /// server answers 401 (for a token something else renews).
    #[arg(long, value_name = "FILE", conflicts_with = "token")]
    token_file: Option<std::path::PathBuf>,

    /// Log in as this user (ZnDraw's POST /v1/auth/jwt/login) at start and
    /// again when the token expires (401). Also read from ZNDRAW_USER. The
    /// password comes from --password-file, else systemd's credential
    /// $CREDENTIALS_DIRECTORY/password (LoadCredential=password:FILE), else
    /// ZNDRAW_PASSWORD.
    #[arg(long, value_name = "EMAIL", conflicts_with_all = ["token", "token_file"])]
    user: Option<String>,

    /// A file holding the password for --user (trailing newline ignored);
    /// beats systemd's password credential and ZNDRAW_PASSWORD.
    #[arg(long, value_name = "FILE", requires = "user")]
    password_file: Option<std::path::PathBuf>,

    /// A job and the command that runs its tasks, as ROOM:CATEGORY:NAME=COMMAND
    /// (e.g. '@global:modifiers:Echo=cat'). COMMAND's words are split as a
    /// shell would ('a b', "a b" and a\ b are one word), but no shell runs
    /// it. Repeat for more jobs.
    #[arg(long = "job", value_name = "JOB=COMMAND", required_unless_present = "serves")]
    jobs: Vec<String>,

    /// A job served by long-lived processes of COMMAND, as
    /// ROOM:CATEGORY:NAME=COMMAND: one process per task slot, started and
    /// ready before the job is registered, each serving task after task over
    /// stdio (the README's protocol; `python3 -m outage_handler
    /// module:Class` serves a ZnDraw Extension). Repeat for more jobs.
    #[arg(long = "serve", value_name = "JOB=COMMAND")]
    serves: Vec<String>,

    /// How long a --serve process may take to become ready (imports,
    /// models) before it counts as failed.
    #[arg(long, default_value = "60s", value_parser = parse_positive_duration, value_name = "TIME")]
    startup_timeout: Duration,

    /// Replace a --serve process after it served N tasks (for handlers that
    /// leak). Default: no limit.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_tasks_per_child: Option<u32>,

    /// A JSON schema file for a job's payload, as ROOM:CATEGORY:NAME=FILE.
    #[arg(long = "schema", value_name = "JOB=FILE")]
    schemas: Vec<String>,

    /// Heartbeat interval (e.g. 30, 2.5, 500ms).
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "TIME")]
    heartbeat: Duration,

    /// Wait between claims when the queue is empty.
    #[arg(long, default_value = "2s", value_parser = parse_duration, value_name = "TIME")]
    poll: Duration,

    /// Task-available push over Socket.IO: `auto` listens when the server
    /// offers it (ZnDraw does) and polls quietly when it does not; `on`
    /// keeps trying; `off` only polls. A pushed event claims at once.
    #[arg(long, default_value = "auto", value_parser = ["auto", "on", "off"], value_name = "MODE")]
    push: String,

    /// Wait between claims when the queue is empty while push is connected
    /// (the fallback for a missed event).
    #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "TIME")]
    push_poll: Duration,

    /// Stop after the server has been unreachable this long.
    #[arg(long, default_value = "120s", value_parser = parse_duration, value_name = "TIME")]
    max_unreachable: Duration,

    /// At most one outage warning per this interval.
    #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "TIME")]
    log_interval: Duration,

    /// Longest wait between retries during an outage.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "TIME")]
    backoff_cap: Duration,

    /// Timeout of each request to the server.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "TIME")]
    request_timeout: Duration,

    /// On Ctrl-C/SIGTERM, how long the running task may take before it is
    /// reported failed ("worker shutting down").
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "TIME")]
    grace: Duration,

    /// What to do when the server no longer knows this worker (for example
    /// after a restart that lost its data): stop, or register again.
    #[arg(long, default_value = "stop", value_parser = ["stop", "register"], value_name = "POLICY")]
    on_registration_lost: String,

    /// How many tasks run at once (1 to 16), under one worker id and one
    /// heartbeat; each outcome is delivered (and held through an outage) on
    /// its own.
    #[arg(long, default_value = "1", value_name = "N")]
    concurrency: u8,

    /// Fail a task whose command runs longer than this (its process group is
    /// killed). Default: no limit.
    #[arg(long, value_parser = parse_positive_duration, value_name = "TIME")]
    task_timeout: Option<Duration>,

    /// Log lines as text, or as one JSON object per line: `ts` (RFC 3339,
    /// UTC), `level`, `target`, `message`, and for the worker's own lines
    /// the event's fields as keys (`event`, `task_id`, `job`, `room`,
    /// `outcome`, `duration_ms`, `worker_id`, …).
    #[arg(long, default_value = "text", value_parser = ["text", "json"], value_name = "FORMAT")]
    log_format: String,

    /// Retry on the exact reference schedule (no jitter). Fleets should keep
    /// jitter on, so that they do not retry in lockstep.
    #[arg(long)]
    no_jitter: bool,

    /// Serve Prometheus metrics on HOST:PORT (/metrics), with /healthz (the
    /// worker's driver is alive) and /readyz (registered, and the server
    /// answers). Off by default; nothing it serves is secret, but keep it on
    /// loopback or a private network (0.0.0.0:9100 in a container).
    #[arg(long, value_name = "HOST:PORT", value_parser = cli::ops::parse_addr)]
    metrics_addr: Option<std::net::SocketAddr>,
}

#[derive(clap::Subcommand, Debug)]
enum Sub {
    /// Write shell completions to stdout (e.g. `outage-worker completions bash
    /// > /etc/bash_completion.d/outage-worker`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write the man page (roff) to stdout (`outage-worker man | man -l -`).
    Man,
}

/// `30`, `2.5`, `500ms`, `2s`, `1m`: integer milliseconds, no floats.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit_ms) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000)
    } else {
        (s, 1000)
    };
    let bad = || format!("{s:?} is not a duration (try 30, 2.5, 500ms, 2s or 1m)");
    if scale_too_fine(num, unit_ms) {
        return Err(format!(
            "{s:?}: durations are whole milliseconds (try 30, 2.5, 500ms, 2s or 1m)"
        ));
    }
    let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
    if whole.is_empty() && frac.is_empty() {
        return Err(bad());
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let mut ms = whole.checked_mul(unit_ms).ok_or_else(bad)?;
    let mut scale = unit_ms;
    for c in frac.chars() {
        let d = c.to_digit(10).ok_or_else(bad)? as u64;
        scale /= 10;
        ms = ms.checked_add(d * scale).ok_or_else(bad)?;
    }
    Ok(Duration::from_millis(ms))
}

/// Does `num` (the number before a unit of `unit_ms` milliseconds) have
/// digits finer than a millisecond (`1.5ms`, `0.0001s`)?
fn scale_too_fine(num: &str, unit_ms: u64) -> bool {
    let frac = num.split_once('.').map_or("", |(_, f)| f);
    let mut scale = unit_ms;
    frac.chars().any(|c| {
        let finer = scale < 10 && c != '0';
        scale /= 10;
        finer
    })
}

/// A duration that must be longer than zero.
fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d == Duration::ZERO {
        return Err(format!("{s:?}: must be longer than zero"));
    }
    Ok(d)
}

struct JobCommand {
    job: Job,
    program: String,
    args: Vec<String>,
}

fn parse_job(spec: &str) -> Result<JobCommand, String> {
    let (name, command) = spec
        .split_once('=')
        .ok_or_else(|| format!("--job {spec:?}: expected ROOM:CATEGORY:NAME=COMMAND"))?;
    let job = Job::parse(name.trim()).map_err(|e| format!("--job: {e}"))?;
    // Split as a shell would (quotes, backslashes); no shell runs it.
    let words = shlex::split(command)
        .ok_or_else(|| format!("--job {spec:?}: unbalanced quotes or a trailing backslash in the command"))?;
    let mut words = words.into_iter();
    let program = words
        .next()
        .ok_or_else(|| format!("--job {spec:?}: the command is empty"))?;
    Ok(JobCommand {
        job,
        program,
        args: words.collect(),
    })
}

fn init_logging(json: bool) {
    // tungstenite traces every WebSocket frame it sends, the push CONNECT
    // (which holds the token) included: never below debug, whatever
    // RUST_LOG, and never above what RUST_LOG gives it (no DEBUG line at
    // info). JSON lines carry each event's fields as keys.
    cli::logging::init(json);
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Sub::Completions { shell }) => {
            use clap::CommandFactory;
            cli::ops::completions(shell, Cli::command());
            return ExitCode::SUCCESS;
        }
        Some(Sub::Man) => {
            use clap::CommandFactory;
            return match cli::ops::man(Cli::command()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => usage(&format!("cannot write the man page: {e}")),
            };
        }
        None => {}
    }
    init_logging(cli.log_format == "json");
    async_std::task::block_on(run(cli))
}

/// What the process exits with (documented in `--help` and the README).
mod exit {
    /// Stopped on request (SIGINT/SIGTERM).
    pub const STOPPED: u8 = 0;
    /// The server was unreachable for longer than --max-unreachable.
    pub const UNREACHABLE: u8 = 1;
    /// Usage or configuration error (also: a request the worker could not
    /// write, which no retry can fix).
    pub const USAGE: u8 = 2;
    /// The server refused the credentials.
    pub const CREDENTIALS: u8 = 3;
    /// The server no longer knows the worker, or refused it (including a
    /// startup that failed for good).
    pub const REGISTRATION: u8 = 4;
    /// A --serve handler process could not be started (at startup, or its
    /// restarts were given up).
    pub const HANDLER: u8 = 5;
}

fn exit_code(reason: StopReason) -> ExitCode {
    ExitCode::from(match reason {
        StopReason::Requested => exit::STOPPED,
        // The token file cannot renew the token: credentials.
        StopReason::Local {
            error: outage_core::Local::TokenFile,
            ..
        } => exit::CREDENTIALS,
        StopReason::Local { .. } => exit::USAGE,
        StopReason::Unreachable { .. } => exit::UNREACHABLE,
        StopReason::RegistrationLost(Fatal::AuthRefused { .. } | Fatal::LoginRefused { .. }) => {
            exit::CREDENTIALS
        }
        StopReason::RegistrationLost(_) | StopReason::RegistrationRejected(_) => exit::REGISTRATION,
    })
}

/// Where the token comes from: --token-file, --user or ZNDRAW_USER (the
/// password from --password-file, else systemd's credential, else
/// ZNDRAW_PASSWORD), --token or the environment, else systemd's token
/// credential, in that order.
fn credentials(cli: &Cli) -> Result<Credentials, String> {
    if let Some(path) = &cli.token_file {
        return Ok(Credentials::TokenFile(path.clone()));
    }
    let user = cli.user.clone().or_else(|| {
        if cli.token.is_none() && from_env(&["OUTAGE_TOKEN", "ZNDRAW_TOKEN"]).is_none() {
            from_env(&["ZNDRAW_USER"])
        } else {
            None
        }
    });
    if let Some(user) = user {
        // systemd's LoadCredential=password:… unless the flag gives it: the
        // unit's credential is deliberate, a variable may be inherited.
        let password_file = cli.password_file.clone().or_else(cli::ops::password_credential);
        let password = match &password_file {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("--password-file: cannot read {}: {e}", path.display()))?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
            None => from_env(&["ZNDRAW_PASSWORD"]).ok_or(
                "--user needs a password: --password-file FILE, systemd's \
                 LoadCredential=password:FILE, or ZNDRAW_PASSWORD",
            )?,
        };
        return Ok(Credentials::Login { user, password });
    }
    match cli.token.clone().or_else(|| from_env(&["ZNDRAW_TOKEN"])) {
        Some(token) => Ok(Credentials::Token(token)),
        // systemd's LoadCredential=token:…, read again on a 401.
        None if let Some(path) = cli::ops::token_credential() => Ok(Credentials::TokenFile(path)),
        None => Err(
            "no credentials: give --token, --token-file or --user (or set OUTAGE_TOKEN, \
             ZNDRAW_TOKEN, or ZNDRAW_USER and ZNDRAW_PASSWORD)"
                .to_owned(),
        ),
    }
}

/// The first of the variables that is set and not empty.
fn from_env(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
}

/// Is `program` something we can run: a path to an executable file, or a
/// name found executable on `PATH`?
fn runnable(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &std::path::Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        return executable(std::path::Path::new(program));
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| executable(&dir.join(program))))
}

async fn run(cli: Cli) -> ExitCode {
    let server = cli
        .server
        .clone()
        .or_else(|| from_env(&["ZNDRAW_URL"]))
        .unwrap_or_else(|| "http://127.0.0.1:8765".to_owned());
    let credentials = match credentials(&cli) {
        Ok(c) => c,
        Err(e) => return usage(&e),
    };
    if let Some(path) = &cli.ca_file
        && let Err(e) = outage_runtime_std::tls::trust_ca_file(path)
    {
        return usage(&format!("--ca-file: {e}"));
    }
    let config = Config {
        heartbeat_interval: cli.heartbeat,
        poll_interval: cli.poll,
        max_unreachable: cli.max_unreachable,
        log_interval: cli.log_interval,
        backoff_cap: cli.backoff_cap,
        request_timeout: cli.request_timeout,
        concurrency: cli.concurrency,
        push_poll_interval: cli.push_poll,
        jitter: if cli.no_jitter { Jitter::Off } else { Jitter::Equal },
        on_registration_lost: if cli.on_registration_lost == "register" {
            OnRegistrationLost::Register
        } else {
            OnRegistrationLost::Stop
        },
        ..Config::DEFAULT
    };
    if let Err(e) = config.validate() {
        return usage(&e.to_string());
    }
    // Serving metrics from before the start: /readyz says "starting".
    let metrics = match cli.metrics_addr.map(cli::ops::start_metrics).transpose() {
        Ok(m) => m,
        Err(e) => return usage(&e),
    };
    let mut builder = WorkerBuilder::new(server.clone(), "")
        .credentials(credentials)
        .config(config)
        .push(match cli.push.as_str() {
            "on" => PushMode::On,
            "off" => PushMode::Off,
            _ => PushMode::Auto,
        });
    if let Some((m, _)) = &metrics {
        builder = builder.metrics(m);
    }
    if let Some(n) = cli::ops::systemd_notifier() {
        builder = builder.systemd(n);
    }
    let token = builder.shared_token();
    let mut served: Vec<String> = Vec::new();
    let mut pools: Vec<LongLived> = Vec::new();
    let mut serve_jobs: Vec<(Job, LongLived, bool)> = Vec::new();
    let specs = cli
        .jobs
        .iter()
        .map(|s| (s, false))
        .chain(cli.serves.iter().map(|s| (s, true)));
    for (spec, long_lived) in specs {
        let jc = match parse_job(spec) {
            Ok(jc) => jc,
            Err(e) => return usage(&e.replacen("--job", if long_lived { "--serve" } else { "--job" }, 1)),
        };
        if served.contains(&jc.job.full_name()) {
            return usage(&format!("--job/--serve {}: given twice", jc.job.full_name()));
        }
        served.push(jc.job.full_name());
        if !runnable(&jc.program) {
            return usage(&format!(
                "--{} {}: {:?} is not an executable file or a program on PATH",
                if long_lived { "serve" } else { "job" },
                jc.job.full_name(),
                jc.program
            ));
        }
        let mut job = jc.job;
        let mut schema_file = false;
        for s in &cli.schemas {
            let Some((name, file)) = s.split_once('=') else {
                return usage(&format!("--schema {s:?}: expected ROOM:CATEGORY:NAME=FILE"));
            };
            if name.trim() == job.full_name() {
                let text = match std::fs::read_to_string(file.trim()) {
                    Ok(t) => t,
                    Err(e) => return usage(&format!("--schema: cannot read {file}: {e}")),
                };
                match serde_json::from_str(&text) {
                    Ok(schema) => job = job.with_schema(schema),
                    Err(e) => return usage(&format!("--schema: {file} is not JSON: {e}")),
                }
                schema_file = true;
            }
        }
        if long_lived {
            let mut pool = LongLived::new(jc.program, jc.args)
                .server(server.clone(), token.clone())
                .processes(usize::from(cli.concurrency))
                .startup_timeout(std::time::Duration::from_millis(cli.startup_timeout.as_millis()));
            if let Some(limit) = cli.task_timeout {
                pool = pool.timeout(std::time::Duration::from_millis(limit.as_millis()));
            }
            if let Some(n) = cli.max_tasks_per_child {
                pool = pool.max_tasks_per_process(n);
            }
            pools.push(pool.clone());
            // Started once every argument is checked (below).
            serve_jobs.push((job, pool, schema_file));
        } else {
            let mut command = Command::new(jc.program, jc.args).server(server.clone(), token.clone());
            if let Some(limit) = cli.task_timeout {
                command = command.timeout(std::time::Duration::from_millis(limit.as_millis()));
            }
            builder = builder.job(job, command);
        }
    }
    for s in &cli.schemas {
        let name = s.split_once('=').map_or(s.as_str(), |(n, _)| n.trim());
        if !served.iter().any(|j| j == name) {
            return usage(&format!("--schema {name}: no --job or --serve serves it"));
        }
    }
    // The --serve handlers: started together and ready before their jobs
    // are registered (no task is claimed while a handler still imports);
    // each job gets the schema its handler announced, unless --schema gives
    // one. A stop signal meanwhile stops, as during the startup retries;
    // an ignored one is logged and ignored (the running worker's sets).
    let mut startup_signals = outage_runtime_std::handled_signals().ok();
    if !serve_jobs.is_empty() {
        let started = async {
            let jobs: Vec<(&Job, &LongLived)> = serve_jobs.iter().map(|(j, p, _)| (j, p)).collect();
            Some(LongLived::start_all(&jobs).await)
        };
        let stopped = async {
            match startup_signals.as_mut() {
                Some(s) => match outage_runtime_std::next_stop_signal(s).await {
                    Some(_) => None,
                    None => futures_lite::future::pending().await,
                },
                None => futures_lite::future::pending().await,
            }
        };
        let results = futures_lite::FutureExt::or(started, stopped).await;
        let failed = match &results {
            None => Some(None),
            Some(r) => r.iter().find_map(|r| r.as_ref().err()).map(|e| Some(e.clone())),
        };
        if let Some(why) = failed {
            LongLived::shutdown_all(&pools).await;
            outage_runtime_std::command::wait_for_abandoned();
            return match why {
                // Stopped on request while the handlers started.
                None => ExitCode::from(exit::STOPPED),
                Some(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(exit::HANDLER)
                }
            };
        }
        for ((job, pool, schema_file), result) in serve_jobs.into_iter().zip(results.into_iter().flatten()) {
            let job = match result {
                Ok(Some(schema)) if !schema_file => job.with_schema(schema),
                _ => job,
            };
            builder = builder.job(job, pool);
        }
    }
    // Started on its own thread, so that a stop signal during the startup
    // retries stops it as requested (exit 0) too.
    let worker = match builder.spawn() {
        Ok(w) => w,
        Err(e) => {
            LongLived::shutdown_all(&pools).await;
            return usage(&e.to_string());
        }
    };
    let grace = std::time::Duration::from_millis(cli.grace.as_millis());
    // A stop signal that came between the handlers' start and the worker's
    // own listener: a stop as requested.
    if let Some(mut s) = startup_signals {
        let pending = futures_lite::future::poll_once(outage_runtime_std::next_stop_signal(&mut s)).await;
        s.handle().close();
        if let Some(Some(_)) = pending {
            worker.shutdown(grace).await;
            LongLived::shutdown_all(&pools).await;
            outage_runtime_std::command::wait_for_abandoned();
            return ExitCode::from(exit::STOPPED);
        }
    }
    // A --serve job whose handler can no longer be started stops the
    // worker as a stop would (the grace for the other tasks), exit 5.
    let handler_gave_up = std::sync::atomic::AtomicBool::new(false);
    let gave_up = async {
        if pools.is_empty() {
            return futures_lite::future::pending().await;
        }
        // The first job whose handler gave up (it logged why).
        let mut any: Vec<_> = pools.iter().map(|p| Box::pin(p.gave_up())).collect();
        futures_lite::future::poll_fn(move |cx| {
            for f in any.iter_mut() {
                if let std::task::Poll::Ready(why) = f.as_mut().poll(cx) {
                    return std::task::Poll::Ready(why);
                }
            }
            std::task::Poll::Pending
        })
        .await;
        handler_gave_up.store(true, std::sync::atomic::Ordering::SeqCst);
        worker.shutdown(grace).await;
        worker.wait().await
    };
    let reason = futures_lite::FutureExt::or(worker.run_until_signal(grace), gave_up).await;
    LongLived::shutdown_all(&pools).await;
    if let Some(error) = worker.startup_error() {
        // The startup failure was logged as it happened.
        return ExitCode::from(match error.error.classify(error.what) {
            outage_core::Class::Fatal(Fatal::AuthRefused { .. } | Fatal::LoginRefused { .. }) => {
                exit::CREDENTIALS
            }
            outage_core::Class::Transient | outage_core::Class::Congested { .. } => exit::UNREACHABLE,
            _ => exit::REGISTRATION,
        });
    }
    let stats = worker.stats();
    worker.log(&outage_core::Event::Summary {
        completed: stats.tasks_completed,
        failed: stats.tasks_failed,
        delivered: stats.outcomes_delivered,
        given_up: stats.outcomes_given_up,
        requests: stats.requests,
        failed_requests: stats.failed_requests,
        outages: stats.recoveries,
    });
    // Commands abandoned on the way out get SIGTERM, then SIGKILL: wait
    // for that before the process is gone.
    outage_runtime_std::command::wait_for_abandoned();
    if handler_gave_up.load(std::sync::atomic::Ordering::SeqCst) {
        return ExitCode::from(exit::HANDLER);
    }
    exit_code(reason)
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("error: {msg}\n\nRun 'outage-worker --help' for usage.");
    ExitCode::from(exit::USAGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2.5").unwrap(), Duration::from_millis(2_500));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("0.25s").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("abc").is_err());
        assert!(
            parse_duration("18446744073709551.9s").is_err(),
            "overflow is an error"
        );
        assert!(parse_duration("18446744073709551615m").is_err());
        assert!(parse_duration("").is_err());
        // Finer than a millisecond: refused, not rounded.
        assert!(parse_duration("1.5ms").is_err());
        assert!(parse_duration("0.0005s").is_err());
        assert!(parse_duration("0.0001").is_err());
        assert_eq!(parse_duration("1.500s").unwrap(), Duration::from_millis(1_500));
        assert_eq!(parse_duration("2.0ms").unwrap(), Duration::from_millis(2));
        assert!(parse_positive_duration("0").is_err());
        assert!(parse_positive_duration("0ms").is_err());
        assert_eq!(parse_positive_duration("1ms").unwrap(), Duration::from_millis(1));
    }

    #[test]
    fn job_specs() {
        let jc = parse_job("@global:modifiers:Echo=./run.sh --fast  x").unwrap();
        assert_eq!(jc.job.full_name(), "@global:modifiers:Echo");
        assert_eq!(jc.program, "./run.sh");
        assert_eq!(jc.args, ["--fast", "x"]);
        let jc = parse_job(r#"@global:modifiers:Echo=./run.sh "a b" 'c d' e\ f"#).unwrap();
        assert_eq!(jc.args, ["a b", "c d", "e f"]);
        let Err(e) = parse_job(r#"a:b:c=./run.sh "open"#) else {
            panic!("an open quote is refused")
        };
        assert!(e.contains("unbalanced quotes"), "{e}");
        assert!(parse_job("@global:modifiers:Echo").is_err());
        assert!(parse_job("Echo=cat").is_err());
        assert!(parse_job("a:b:c= ").is_err());
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
