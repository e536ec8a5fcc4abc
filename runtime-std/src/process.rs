//! Long-lived handler processes (`outage-worker --serve`): one process per
//! task slot serves a job's tasks one after another over stdio, so that a
//! Python handler imports `ase` or loads a torch model once, not per task.
//!
//! The protocol (version [`PROTOCOL`], the README's "Long-lived handlers"):
//! newline-delimited JSON-RPC 2.0. The process writes
//! `{"jsonrpc":"2.0","method":"ready","params":{"protocol":1,"schema":{…}}}`
//! once it is ready (the optional `schema` is registered for the job); each
//! task is a request `{"jsonrpc":"2.0","id":N,"method":"task","params":{"id",
//! "job","room","env":{…},"payload":<verbatim>}}` answered by
//! `{"jsonrpc":"2.0","id":N,"result":{"status":"completed"}}` or
//! `{…"result":{"status":"failed","error":"text"}}` (a JSON-RPC `error`
//! fails the task too); a renewed token is sent as the notification
//! `{"jsonrpc":"2.0","method":"token","params":{"token":"…"}}`, also while
//! a task runs. stdout carries only the protocol (the Python helper moves
//! user code's prints to stderr); stderr is logged line by line with the
//! task it belongs to, and its end explains a crash. End of stdin: the
//! process finishes and exits.
//!
//! When a process is started again, and when the restarts are given up, is
//! the core's [`outage_core::respawn`] rule; this module spawns, talks and
//! kills. Every process runs in its own group: a process that is abandoned
//! (its task's future dropped at a stop, a timeout, a protocol fault) has
//! the whole group sent SIGTERM, then SIGKILL [`KILL_AFTER`] later.
//!
//! Layering: above `job` (it implements [`Handler`]) and beside
//! [`crate::command`] (whose process-group and environment helpers it
//! uses); nothing in the crate imports it but the crate root.

use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_process::{ChildStdin, ChildStdout, Stdio};
use async_std::channel::{Receiver, Sender, bounded};
use futures_lite::{AsyncBufReadExt, AsyncWriteExt, FutureExt};
use outage_core::Event;
use outage_core::respawn::{Respawn, Restart};

use crate::command::{KILL_AFTER, base_environment, tail, terminate_group};
use crate::job::Job;
use crate::{Handler, SharedToken, Task, TaskResult};

/// The protocol version this worker speaks.
pub const PROTOCOL: u64 = 1;
/// The longest line a handler process may write (a reply, the ready
/// message with its schema); a longer one breaks the protocol.
pub const MAX_LINE: usize = 1 << 20;
/// How long a process may take to become ready, unless told otherwise.
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes of stderr kept to explain a crash.
const STDERR_KEEP: usize = 2000;
/// The longest stderr line logged as one line (longer ones are split).
const STDERR_LINE: usize = 16 << 10;
/// The longest error text a handler's reply may give a task.
const ERROR_KEEP: usize = 4000;
/// After a process exited mid-task, how long what it wrote is still read.
const EXIT_READ: Duration = Duration::from_millis(200);
/// How often a running task's token is checked for a renewal (and its
/// process for an exit its stdout does not show).
const TOKEN_CHECK: Duration = Duration::from_millis(250);
/// After stdout ends, how long to wait for the exit status and the rest of
/// stderr.
const EXIT_WAIT: Duration = Duration::from_secs(2);

/// A [`Handler`] serving one job's tasks through long-lived processes of
/// `program args…` (no shell), one per task slot.
///
/// ```no_run
/// use outage_runtime_std::process::LongLived;
/// use outage_runtime_std::{Job, WorkerBuilder};
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let builder = WorkerBuilder::new("http://127.0.0.1:8765", "secret");
/// let job = Job::parse("@global:modifiers:Shift")?;
/// let handler = LongLived::new("python3", ["-m", "outage_handler", "shift:Shift"])
///     .server("http://127.0.0.1:8765", builder.shared_token())
///     .processes(1);
/// // Started and ready before the job is registered; the schema it announced.
/// let schema = handler.start(&job).await?;
/// let worker = builder
///     .job(job.with_schema(schema.unwrap_or_default()), handler.clone())
///     .start()
///     .await?;
/// worker.run_until_signal(std::time::Duration::from_secs(10)).await;
/// handler.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct LongLived {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LongLived {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LongLived")
            .field("program", &self.inner.program)
            .field("args", &self.inner.args)
            .field("processes", &self.inner.processes)
            .finish_non_exhaustive()
    }
}

struct Inner {
    program: Arc<str>,
    args: Arc<[String]>,
    server: Option<(Arc<str>, SharedToken)>,
    timeout: Option<Duration>,
    startup_timeout: Duration,
    max_tasks: Option<u32>,
    processes: usize,
    job: Mutex<Arc<str>>,
    slots: Mutex<Vec<Slot>>,
    respawn: Mutex<Respawn>,
    /// Why the restarts were given up; `gave_up_signal` is closed then.
    gave_up: Mutex<Option<String>>,
    gave_up_signal: (Sender<()>, Receiver<()>),
    stopping: std::sync::atomic::AtomicBool,
    /// Recycled processes being closed ([`LongLived::shutdown`] waits).
    closing: Mutex<Vec<async_std::task::JoinHandle<()>>>,
}

/// A task slot's process.
enum Slot {
    Ready(Proc),
    /// A fresh process being started (after the core's wait); `None` once
    /// the restarts were given up.
    Starting(async_std::task::JoinHandle<Option<Proc>>),
    /// No process: one starts when a task needs it. What a task abandoned
    /// mid-exchange leaves (only a stop abandons one): no process is
    /// started for a worker that is on its way out.
    Empty,
}

impl LongLived {
    /// Serve with `program args…` (no shell: no splitting, quoting or
    /// globbing); one process ([`LongLived::processes`] for more).
    pub fn new(program: impl Into<String>, args: impl IntoIterator<Item = impl Into<String>>) -> Self {
        LongLived {
            inner: Arc::new(Inner {
                program: Arc::from(program.into()),
                args: args.into_iter().map(Into::into).collect(),
                server: None,
                timeout: None,
                startup_timeout: DEFAULT_STARTUP_TIMEOUT,
                max_tasks: None,
                processes: 1,
                job: Mutex::new(Arc::from("")),
                slots: Mutex::new(Vec::new()),
                respawn: Mutex::new(Respawn::new()),
                gave_up: Mutex::new(None),
                gave_up_signal: bounded(1),
                stopping: std::sync::atomic::AtomicBool::new(false),
                closing: Mutex::new(Vec::new()),
            }),
        }
    }

    fn configure(mut self, f: impl FnOnce(&mut Inner)) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => f(inner),
            None => panic!("LongLived is configured before it is cloned or started"),
        }
        self
    }

    /// Give each process `ZNDRAW_URL` and `ZNDRAW_TOKEN`, and each task the
    /// current token (pass [`crate::WorkerBuilder::shared_token`]: a renewal
    /// reaches the processes, also mid-task).
    pub fn server(self, url: impl Into<String>, token: impl Into<SharedToken>) -> Self {
        let server = (Arc::from(url.into()), token.into());
        self.configure(|i| i.server = Some(server))
    }

    /// How many processes (the worker's concurrency: one per task slot).
    pub fn processes(self, n: usize) -> Self {
        self.configure(|i| i.processes = n.max(1))
    }

    /// Fail a task that runs longer than `limit`; its process is replaced.
    pub fn timeout(self, limit: Duration) -> Self {
        self.configure(|i| i.timeout = Some(limit))
    }

    /// How long a process may take to announce itself ready
    /// ([`DEFAULT_STARTUP_TIMEOUT`]).
    pub fn startup_timeout(self, limit: Duration) -> Self {
        self.configure(|i| i.startup_timeout = limit)
    }

    /// Replace a process after it served `n` tasks (leaky handlers).
    pub fn max_tasks_per_process(self, n: u32) -> Self {
        self.configure(|i| i.max_tasks = Some(n.max(1)))
    }

    /// Start every process for `job` and wait until each is ready: the
    /// schema the first announced, if any. A process that exits, times out
    /// or breaks the protocol before it is ready is an error (no task has
    /// been claimed yet: the job must not be registered).
    pub async fn start(&self, job: &Job) -> Result<Option<serde_json::Value>, String> {
        let name: Arc<str> = Arc::from(job.full_name());
        *lock(&self.inner.job) = name.clone();
        // Started together, polled here (not spawned): dropping `start`
        // (a stop signal meanwhile) drops every start, which kills its
        // process.
        let starts = (0..self.inner.processes).map(|_| start_process(self.inner.clone(), name.clone()));
        let mut schema = None;
        let mut first_error = None;
        let mut procs = Vec::new();
        for started in join_all(starts).await {
            match started {
                Ok((proc, s)) => {
                    schema = schema.or(s);
                    procs.push(proc);
                }
                Err(e) => {
                    first_error.get_or_insert(e.why);
                }
            }
        }
        if let Some(why) = first_error {
            // The caller reports it (the CLI: one error line, exit 5).
            let _ = lock(&self.inner.respawn).start_failed();
            for p in procs {
                p.close().await;
            }
            return Err(format!("the handler for {name} did not start: {why}"));
        }
        lock(&self.inner.respawn).ready();
        lock(&self.inner.slots).extend(procs.into_iter().map(Slot::Ready));
        Ok(schema)
    }

    /// [`LongLived::start`] for several jobs at once, together: each one's
    /// result, in order. Dropped (a stop meanwhile), every start is
    /// dropped and its processes killed.
    pub async fn start_all(jobs: &[(&Job, &LongLived)]) -> Vec<Result<Option<serde_json::Value>, String>> {
        join_all(jobs.iter().map(|(job, pool)| pool.start(job))).await
    }

    /// Resolves once the restarts of the job's processes were given up (the
    /// worker should stop): why.
    pub async fn gave_up(&self) -> String {
        let _ = self.inner.gave_up_signal.1.recv().await;
        lock(&self.inner.gave_up).clone().unwrap_or_default()
    }

    /// End every idle process: stdin closed, then (after [`KILL_AFTER`])
    /// SIGTERM and SIGKILL to what is left of its group. Call it once the
    /// worker stopped (running tasks were given their grace by then).
    pub async fn shutdown(&self) {
        self.inner
            .stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let slots = std::mem::take(&mut *lock(&self.inner.slots));
        let mut ends = Vec::new();
        for slot in slots {
            match slot {
                Slot::Ready(p) => ends.push(async_std::task::spawn(p.close())),
                Slot::Starting(h) => {
                    if let Some(Some(p)) = h.cancel().await {
                        ends.push(async_std::task::spawn(p.close()));
                    }
                }
                Slot::Empty => {}
            }
        }
        // And the processes recycled a moment ago, still closing.
        ends.extend(std::mem::take(&mut *lock(&self.inner.closing)));
        for end in ends {
            end.await;
        }
    }

    /// [`LongLived::shutdown`] for several at once, together.
    pub async fn shutdown_all(pools: &[LongLived]) {
        join_all(pools.iter().map(LongLived::shutdown)).await;
    }
}

impl Handler for LongLived {
    fn run(&self, task: Task) -> Pin<Box<dyn Future<Output = TaskResult> + Send + 'static>> {
        Box::pin(run_task(self.inner.clone(), task))
    }
}

/// Every future's output, in order, the futures polled together.
async fn join_all<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut pending: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut done: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (f, out) in pending.iter_mut().zip(done.iter_mut()) {
            if out.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *out = Some(v),
                    std::task::Poll::Pending => all = false,
                }
            }
        }
        if all {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    done.into_iter().flatten().collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn emit(event: &Event<'_>) {
    crate::emit(event);
}

fn ms(d: Duration) -> outage_core::Duration {
    outage_core::Duration::from_millis(d.as_millis() as u64)
}

fn std_duration(d: outage_core::Duration) -> Duration {
    Duration::from_millis(d.as_millis())
}

impl Inner {
    fn give_up(&self, job: &str, failed_starts: u32, why: &str) {
        {
            let mut gave_up = lock(&self.gave_up);
            if gave_up.is_some() {
                return;
            }
            *gave_up = Some(format!("the handler for {job} cannot be started: {why}"));
        }
        emit(&Event::HandlerGaveUp {
            job,
            failed_starts,
            why,
        });
        self.gave_up_signal.0.close();
    }

    fn gave_up_text(&self) -> Option<String> {
        lock(&self.gave_up).clone()
    }

    /// A slot whose process is started again after `wait`, in the
    /// background, through the core's rule for failed starts.
    fn restart(self: &Arc<Self>, wait: Duration) -> Slot {
        let inner = self.clone();
        Slot::Starting(async_std::task::spawn(async move {
            let job = lock(&inner.job).clone();
            let mut wait = wait;
            loop {
                if !wait.is_zero() {
                    async_std::task::sleep(wait).await;
                }
                if inner.stopping.load(std::sync::atomic::Ordering::SeqCst) {
                    return None;
                }
                match start_process(inner.clone(), job.clone()).await {
                    Ok((proc, _)) => {
                        lock(&inner.respawn).ready();
                        return Some(proc);
                    }
                    Err(failed) => {
                        let restart = lock(&inner.respawn).start_failed();
                        match restart {
                            Restart::After(d) => {
                                emit(&Event::HandlerEnded {
                                    job: &job,
                                    pid: failed.pid,
                                    why: &failed.why,
                                    restart_in: d,
                                });
                                wait = std_duration(d);
                            }
                            Restart::GiveUp { failed_starts } => {
                                inner.give_up(&job, failed_starts, &failed.why);
                                return None;
                            }
                        }
                    }
                }
            }
        }))
    }
}

/// A handler process: its group, its pipes and its readers.
struct Proc {
    child: async_process::Child,
    pid: u32,
    stdin: Option<ChildStdin>,
    lines: Receiver<Line>,
    stderr: Arc<Stderr>,
    next_id: u64,
    served: u32,
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGTERM to the group, SIGKILL later if any of it is left; a group
        // that is gone already (a clean exit) is not signalled.
        terminate_group(self.pid as i32);
    }
}

impl Proc {
    /// End it the polite way: stdin closed, the exit awaited for
    /// [`KILL_AFTER`]; then the group is signalled (dropped).
    async fn close(mut self) {
        drop(self.stdin.take());
        let _ = async_std::future::timeout(KILL_AFTER, self.child.status()).await;
    }

    /// Why it ended (stdout closed), `when` it did: its exit status
    /// (waited for a little) and the end of what it wrote to stderr.
    async fn ended(&mut self, when: &str) -> String {
        let status = async_std::future::timeout(EXIT_WAIT, self.child.status()).await;
        let _ = async_std::future::timeout(Duration::from_millis(300), self.stderr.done.1.recv()).await;
        let why = match status {
            Ok(Ok(s)) => status_words(s),
            Ok(Err(e)) => format!("ended (its status is unknown: {e})"),
            Err(_) => "closed its stdout".to_owned(),
        };
        let tail = self.stderr.tail();
        if tail.is_empty() {
            format!("handler process {why} {when}")
        } else {
            format!("handler process {why} {when}: {tail}")
        }
    }
}

/// An exit status in words: `exited with status 3`, `was killed by signal 9 (SIGKILL)`.
fn status_words(s: std::process::ExitStatus) -> String {
    match (s.code(), std::os::unix::process::ExitStatusExt::signal(&s)) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}{}", signal_name(sig)),
        (None, None) => "ended".to_owned(),
    }
}

impl Proc {
    /// Before a task is sent: is this idle process still fit for it? It
    /// may have exited, closed its stdout, or written something no request
    /// asked for (a late or repeated reply); then why.
    fn idle_fault(&mut self) -> Option<String> {
        if let Ok(Some(status)) = self.child.try_status() {
            let tail = self.stderr.tail();
            let why = status_words(status);
            return Some(if tail.is_empty() {
                format!("handler process {why} while idle")
            } else {
                format!("handler process {why} while idle: {tail}")
            });
        }
        match self.lines.try_recv() {
            Ok(Line::Text(text)) => Some(format!(
                "handler broke the protocol: it wrote {} while no request was open",
                shown(&text)
            )),
            Ok(Line::TooLong) => Some(format!(
                "handler broke the protocol: a line longer than {} KiB while no request was open",
                MAX_LINE >> 10
            )),
            Err(async_std::channel::TryRecvError::Closed) => {
                Some("handler process closed its stdout while idle".to_owned())
            }
            Err(async_std::channel::TryRecvError::Empty) => None,
        }
    }
}

fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| format!(" ({})", s.as_str()))
        .unwrap_or_default()
}

/// A line from a process's stdout.
enum Line {
    Text(String),
    TooLong,
}

/// A process's stderr: logged line by line, its end kept.
struct Stderr {
    job: Arc<str>,
    task: Mutex<String>,
    tail: Mutex<Vec<u8>>,
    /// Closed at the end of stderr.
    done: (Sender<()>, Receiver<()>),
}

impl Stderr {
    fn tail(&self) -> String {
        let kept = lock(&self.tail);
        tail(&String::from_utf8_lossy(&kept), STDERR_KEEP).to_owned()
    }

    fn line(&self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\r');
        let task = lock(&self.task).clone();
        emit(&Event::HandlerOutput {
            job: &self.job,
            task_id: &task,
            line: text,
        });
        let mut kept = lock(&self.tail);
        kept.extend_from_slice(line);
        kept.push(b'\n');
        if kept.len() > 2 * STDERR_KEEP {
            let cut = kept.len() - STDERR_KEEP;
            kept.drain(..cut);
        }
    }

    /// A new task: its own stderr explains its crash.
    fn begin(&self, task_id: &str) {
        *lock(&self.task) = task_id.to_owned();
        lock(&self.tail).clear();
    }

    /// The task is over: later lines belong to no task.
    fn end(&self) {
        lock(&self.task).clear();
    }
}

/// Read stdout as bounded lines into `tx`; ends (closing the channel) at
/// the end of stdout or after a line longer than [`MAX_LINE`].
async fn read_lines(out: ChildStdout, tx: Sender<Line>) {
    let mut r = futures_lite::io::BufReader::with_capacity(64 << 10, out);
    let mut line = Vec::new();
    loop {
        let buf = match r.fill_buf().await {
            Ok([]) | Err(_) => {
                // A last line without its end still counts.
                let text = String::from_utf8_lossy(&line).trim_end_matches('\r').to_owned();
                if !text.trim().is_empty() {
                    let _ = tx.send(Line::Text(text)).await;
                }
                return;
            }
            Ok(buf) => buf,
        };
        let (take, end) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (buf.len(), false),
        };
        if line.len() + take > MAX_LINE {
            let _ = tx.send(Line::TooLong).await;
            return;
        }
        line.extend_from_slice(&buf[..take]);
        r.consume(take + usize::from(end));
        if end {
            let text = String::from_utf8_lossy(&line).trim_end_matches('\r').to_owned();
            line.clear();
            if text.trim().is_empty() {
                continue;
            }
            if tx.send(Line::Text(text)).await.is_err() {
                return;
            }
        }
    }
}

/// Log stderr line by line (long lines split), keeping its end.
async fn read_stderr(err: async_process::ChildStderr, log: Arc<Stderr>) {
    let mut r = futures_lite::io::BufReader::with_capacity(16 << 10, err);
    let mut line = Vec::new();
    loop {
        let buf = match r.fill_buf().await {
            Ok([]) | Err(_) => break,
            Ok(buf) => buf,
        };
        let (take, end) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (buf.len().min(STDERR_LINE - line.len()), false),
        };
        line.extend_from_slice(&buf[..take]);
        r.consume(take + usize::from(end));
        if end || line.len() >= STDERR_LINE {
            log.line(&line);
            line.clear();
        }
    }
    if !line.is_empty() {
        log.line(&line);
    }
    log.done.0.close();
}

/// A start that failed: the process id (0: it never ran) and why.
struct StartFailed {
    pid: u32,
    why: String,
}

/// Spawn a process for `job` and wait for its ready message: the process
/// and the schema it announced.
async fn start_process(
    inner: Arc<Inner>,
    job: Arc<str>,
) -> Result<(Proc, Option<serde_json::Value>), StartFailed> {
    use std::os::unix::process::CommandExt;
    let began = Instant::now();
    let mut env = base_environment(std::env::vars_os());
    let mut set = |k: &str, v: &str| env.push((k.into(), v.into()));
    set("OUTAGE_PROTOCOL", &PROTOCOL.to_string());
    set("ZNDRAW_JOB", &job);
    set("OUTAGE_JOB", &job);
    if let Some((url, token)) = &inner.server {
        set("ZNDRAW_URL", url);
        set("ZNDRAW_TOKEN", &token.get());
    }
    let mut cmd = std::process::Command::new(&*inner.program);
    cmd.args(inner.args.iter()).process_group(0).env_clear().envs(env);
    let mut child = async_process::Command::from(cmd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| StartFailed {
            pid: 0,
            why: format!("cannot run {}: {e}", inner.program),
        })?;
    let pid = child.id();
    let (tx, lines) = bounded(4);
    let stderr = Arc::new(Stderr {
        job: job.clone(),
        task: Mutex::new(String::new()),
        tail: Mutex::new(Vec::new()),
        done: bounded(1),
    });
    if let Some(out) = child.stdout.take() {
        async_std::task::spawn(read_lines(out, tx));
    }
    if let Some(err) = child.stderr.take() {
        async_std::task::spawn(read_stderr(err, stderr.clone()));
    }
    let mut proc = Proc {
        stdin: child.stdin.take(),
        child,
        pid,
        lines,
        stderr,
        next_id: 1,
        served: 0,
    };
    let failed = |why: String| StartFailed { pid, why };
    let first = async_std::future::timeout(inner.startup_timeout, proc.lines.recv()).await;
    let schema = match first {
        Err(_) => {
            return Err(failed(format!(
                "not ready after {}s (its startup timeout)",
                inner.startup_timeout.as_secs_f32()
            )));
        }
        Ok(Err(_)) => return Err(failed(proc.ended("before it was ready").await)),
        Ok(Ok(Line::TooLong)) => {
            return Err(failed(format!(
                "its ready message is longer than {} KiB",
                MAX_LINE >> 10
            )));
        }
        Ok(Ok(Line::Text(line))) => parse_ready(&line).map_err(failed)?,
    };
    emit(&Event::HandlerReady {
        job: &job,
        pid,
        took: ms(began.elapsed()),
    });
    Ok((proc, schema))
}

/// The ready message: the schema it carries, if any.
fn parse_ready(line: &str) -> Result<Option<serde_json::Value>, String> {
    let bad = || {
        format!(
            "its first line is not the ready message of protocol {PROTOCOL}: {}",
            shown(line)
        )
    };
    let v: serde_json::Value = serde_json::from_str(line).map_err(|_| bad())?;
    if v.get("method").and_then(|m| m.as_str()) != Some("ready") {
        return Err(bad());
    }
    let params = v.get("params");
    match params.and_then(|p| p.get("protocol")).and_then(|p| p.as_u64()) {
        Some(PROTOCOL) => {}
        Some(n) => return Err(format!("it speaks protocol {n}; this worker speaks {PROTOCOL}")),
        None => return Err(bad()),
    }
    match params.and_then(|p| p.get("schema")) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(s @ serde_json::Value::Object(_)) => Ok(Some(s.clone())),
        Some(_) => Err("its ready message's schema is not a JSON object".to_owned()),
    }
}

/// A line as quoted in an error: its start.
fn shown(line: &str) -> String {
    let mut end = line.len().min(200);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    let more = if end < line.len() { "…" } else { "" };
    format!("{:?}{more}", &line[..end])
}

/// A JSON string.
fn js(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// The task request: the payload embedded verbatim, last.
fn request_line(id: u64, task: &Task, env: &[(&str, &str)]) -> Vec<u8> {
    let payload = task.payload_json();
    let mut s = String::with_capacity(payload.len() + 512);
    let _ = write!(
        s,
        r#"{{"jsonrpc":"2.0","id":{id},"method":"task","params":{{"id":{},"job":{},"room":{},"env":{{"#,
        js(&task.id),
        js(&task.job_name),
        js(&task.room_id)
    );
    for (i, (k, v)) in env.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&js(k));
        s.push(':');
        s.push_str(&js(v));
    }
    s.push_str(r#"},"payload":"#);
    // JSON escapes every line break inside a string; one between tokens
    // would end the line, and a space there is the same JSON.
    if payload.contains(['\n', '\r']) {
        s.extend(
            payload
                .chars()
                .map(|c| if c == '\n' || c == '\r' { ' ' } else { c }),
        );
    } else {
        s.push_str(payload);
    }
    s.push_str("}}\n");
    s.into_bytes()
}

fn token_line(token: &str) -> Vec<u8> {
    format!(
        "{{\"jsonrpc\":\"2.0\",\"method\":\"token\",\"params\":{{\"token\":{}}}}}\n",
        js(token)
    )
    .into_bytes()
}

/// A reply to request `id`: the outcome, `None` for a notification (a
/// method the worker does not know: ignored), or how it broke the protocol.
fn parse_reply(line: &str, id: u64) -> Result<Option<TaskResult>, String> {
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|_| format!("a line that is not JSON: {}", shown(line)))?;
    let Some(obj) = v.as_object() else {
        return Err(format!("a line that is not a JSON object: {}", shown(line)));
    };
    if !obj.contains_key("id") && obj.contains_key("method") {
        return Ok(None);
    }
    match obj.get("id").and_then(|i| i.as_u64()) {
        Some(n) if n == id => {}
        Some(n) => return Err(format!("a reply to request {n} while request {id} runs")),
        None => return Err(format!("a message without a request id: {}", shown(line))),
    }
    if let Some(err) = obj.get("error") {
        let msg = err
            .get("message")
            .and_then(|m| m.as_str())
            .unwrap_or("the handler replied with an error and no message");
        return Ok(Some(Err(head(msg))));
    }
    let result = obj
        .get("result")
        .ok_or_else(|| format!("a reply with neither result nor error: {}", shown(line)))?;
    match result.get("status").and_then(|s| s.as_str()) {
        Some("completed") => Ok(Some(Ok(()))),
        Some("failed") => Ok(Some(Err(head(
            result
                .get("error")
                .and_then(|e| e.as_str())
                .unwrap_or("the handler said the task failed"),
        )))),
        other => Err(format!(
            "a reply whose status is {other:?}, not completed or failed"
        )),
    }
}

/// The start of a long text, on a char boundary.
fn head(text: &str) -> String {
    let text = text.trim();
    if text.len() <= ERROR_KEEP {
        return text.to_owned();
    }
    let mut end = ERROR_KEEP;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// How one task's exchange ended.
enum Exchange {
    Reply(TaskResult),
    /// The process ended or broke the protocol: the task's error.
    Broken(String),
    TimedOut(Duration),
}

/// Owns a slot while a task uses it; dropped, it puts the slot back: the
/// process if it is idle, else (a task's future dropped mid-exchange, at a
/// stop) a fresh start, the abandoned group terminated.
struct Checkout {
    inner: Arc<Inner>,
    proc: Option<Proc>,
    /// The slot's process is being started; awaited by this task.
    pending: Option<async_std::task::JoinHandle<Option<Proc>>>,
    /// The process is mid-exchange: it cannot be given another task.
    busy: bool,
    /// Set: what goes back instead of the process.
    next: Option<Slot>,
}

impl Drop for Checkout {
    fn drop(&mut self) {
        let slot = if let Some(pending) = self.pending.take() {
            // Dropped while it waited for the start: the start goes on.
            Slot::Starting(pending)
        } else if let Some(next) = self.next.take() {
            drop(self.proc.take());
            next
        } else {
            match self.proc.take() {
                Some(p) if !self.busy => Slot::Ready(p),
                other => {
                    // Abandoned mid-exchange (a stop): killed, not restarted.
                    drop(other);
                    Slot::Empty
                }
            }
        };
        if self.inner.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            // After the shutdown: nothing is put back (dropped: killed).
            if let Slot::Starting(h) = slot {
                async_std::task::spawn(async move {
                    if let Some(Some(p)) = h.cancel().await {
                        p.close().await;
                    }
                });
            }
            return;
        }
        lock(&self.inner.slots).push(slot);
    }
}

fn restart_wait(r: Restart) -> Duration {
    match r {
        Restart::After(d) => std_duration(d),
        Restart::GiveUp { .. } => Duration::ZERO,
    }
}

async fn run_task(inner: Arc<Inner>, task: Task) -> TaskResult {
    if let Some(why) = inner.gave_up_text() {
        return Err(why);
    }
    let Some(mut slot) = lock(&inner.slots).pop() else {
        return Err("no handler process is free (more tasks than processes)".to_owned());
    };
    let mut out = Checkout {
        inner: inner.clone(),
        proc: None,
        pending: None,
        busy: false,
        next: None,
    };
    // A process fit for the task: a dead or out-of-step idle one is
    // replaced first (the task was not sent: it is not its fault).
    let proc = loop {
        match slot {
            Slot::Ready(p) => out.proc = Some(p),
            Slot::Starting(h) => {
                let started = out.pending.insert(h).await;
                out.pending = None;
                out.proc = started;
            }
            Slot::Empty => {
                slot = inner.restart(Duration::ZERO);
                continue;
            }
        }
        let Some(proc) = out.proc.as_mut() else {
            // Given up while this task waited for the restart. The slot
            // goes back as a restart that ends at once.
            out.next = Some(Slot::Starting(async_std::task::spawn(async { None })));
            return Err(inner
                .gave_up_text()
                .unwrap_or_else(|| "the handler process could not be started".to_owned()));
        };
        let Some(why) = proc.idle_fault() else {
            break out.proc.as_mut().expect("checked above");
        };
        let wait = restart_wait(lock(&inner.respawn).ended());
        emit(&Event::HandlerEnded {
            job: &task.job_name,
            pid: proc.pid,
            why: &why,
            restart_in: ms(wait),
        });
        drop(out.proc.take());
        slot = inner.restart(wait);
    };
    out.busy = true;
    let exchange = exchange(&inner, proc, &task).await;
    out.busy = false;
    proc.stderr.end();
    let job = task.job_name.as_str();
    match exchange {
        Exchange::Reply(outcome) => {
            lock(&inner.respawn).replied();
            proc.served += 1;
            if inner.max_tasks.is_some_and(|max| proc.served >= max) {
                emit(&Event::HandlerRecycled {
                    job,
                    pid: proc.pid,
                    tasks: proc.served,
                });
                if let Some(p) = out.proc.take() {
                    let mut closing = lock(&inner.closing);
                    // Older closes are over by now (2 s each at most):
                    // kept bounded, the oldest let go.
                    if closing.len() >= 16 {
                        drop(closing.remove(0));
                    }
                    closing.push(async_std::task::spawn(p.close()));
                }
                let wait = lock(&inner.respawn).replaced();
                out.next = Some(inner.restart(restart_wait(wait)));
            }
            outcome
        }
        Exchange::Broken(why) => {
            let restart = lock(&inner.respawn).ended();
            Err(replace(&inner, &mut out, job, why, restart))
        }
        Exchange::TimedOut(limit) => {
            let why = format!("task timed out after {}s", limit.as_secs_f32());
            let restart = lock(&inner.respawn).replaced();
            Err(replace(&inner, &mut out, job, why, restart))
        }
    }
}

/// The checked-out process is replaced (`restart`: when, by the core's
/// rule), logged with `why`; `why` back, as the task's error.
fn replace(inner: &Arc<Inner>, out: &mut Checkout, job: &str, why: String, restart: Restart) -> String {
    let wait = restart_wait(restart);
    emit(&Event::HandlerEnded {
        job,
        pid: out.proc.as_ref().map_or(0, |p| p.pid),
        why: &why,
        restart_in: ms(wait),
    });
    out.next = Some(inner.restart(wait));
    why
}

/// Send `task` to `proc` and wait for its reply, telling it of renewed
/// tokens meanwhile.
async fn exchange(inner: &Inner, proc: &mut Proc, task: &Task) -> Exchange {
    let id = proc.next_id;
    proc.next_id += 1;
    proc.stderr.begin(&task.id);
    let token = inner.server.as_ref().map(|(url, t)| (url.clone(), t.clone()));
    let current = token.as_ref().map(|(_, t)| t.get());
    let mut env: Vec<(&str, &str)> = vec![
        ("ZNDRAW_TASK_ID", &task.id),
        ("ZNDRAW_JOB", &task.job_name),
        ("ZNDRAW_ROOM", &task.room_id),
        ("OUTAGE_TASK_ID", &task.id),
        ("OUTAGE_JOB", &task.job_name),
        ("OUTAGE_ROOM", &task.room_id),
    ];
    if let (Some((url, _)), Some(tok)) = (&token, &current) {
        env.push(("ZNDRAW_URL", url));
        env.push(("ZNDRAW_TOKEN", tok));
    }
    let line = request_line(id, task, &env);
    let talk = async {
        let Some(stdin) = proc.stdin.as_mut() else {
            return Exchange::Broken("its stdin is closed".to_owned());
        };
        if stdin.write_all(&line).await.is_err() || stdin.flush().await.is_err() {
            return Exchange::Broken(proc.ended("while it was sent the task").await);
        }
        drop(line);
        let mut sent_token = current.clone();
        loop {
            let next = async { Some(proc.lines.recv().await) }.or(async {
                async_std::task::sleep(TOKEN_CHECK).await;
                None
            });
            match next.await {
                None if matches!(proc.child.try_status(), Ok(Some(_))) => {
                    // It exited, but something it started holds its stdout
                    // open: what it wrote before is still read, briefly.
                    let grace = async_std::future::timeout(EXIT_READ, async {
                        while let Ok(Line::Text(text)) = proc.lines.recv().await {
                            if let Ok(Some(outcome)) = parse_reply(&text, id) {
                                return Some(outcome);
                            }
                        }
                        None
                    });
                    if let Ok(Some(outcome)) = grace.await {
                        return Exchange::Reply(outcome);
                    }
                    return Exchange::Broken(proc.ended("while running the task").await);
                }
                None => {
                    // A renewal since the request: tell the process.
                    let now = token.as_ref().map(|(_, t)| t.get());
                    if now != sent_token {
                        sent_token = now;
                        if let (Some(tok), Some(stdin)) = (&sent_token, proc.stdin.as_mut()) {
                            let _ = stdin.write_all(&token_line(tok)).await;
                            let _ = stdin.flush().await;
                        }
                    }
                }
                Some(Err(_)) => {
                    return Exchange::Broken(proc.ended("while running the task").await);
                }
                Some(Ok(Line::TooLong)) => {
                    return Exchange::Broken(format!(
                        "handler broke the protocol: a line longer than {} KiB",
                        MAX_LINE >> 10
                    ));
                }
                Some(Ok(Line::Text(text))) => match parse_reply(&text, id) {
                    Ok(Some(outcome)) => return Exchange::Reply(outcome),
                    Ok(None) => {}
                    Err(why) => return Exchange::Broken(format!("handler broke the protocol: {why}")),
                },
            }
        }
    };
    match inner.timeout {
        None => talk.await,
        Some(limit) => match async_std::future::timeout(limit, talk).await {
            Ok(e) => e,
            Err(_) => Exchange::TimedOut(limit),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_embeds_the_payload_verbatim() {
        let task = Task::new(
            "t-1",
            "@global:modifiers:Shift",
            "room \"1\"",
            r#"{"dx": 1.50, "big": 123456789012345678901234567890}"#,
        )
        .unwrap();
        let line = request_line(7, &task, &[("ZNDRAW_TOKEN", "tok")]);
        let text = std::str::from_utf8(&line).unwrap();
        assert!(text.ends_with("}}\n"));
        assert_eq!(text.matches('\n').count(), 1);
        assert!(
            text.contains(r#""payload":{"dx": 1.50, "big": 123456789012345678901234567890}}}"#),
            "{text}"
        );
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(v["id"], 7);
        assert_eq!(v["method"], "task");
        assert_eq!(v["params"]["room"], "room \"1\"");
        assert_eq!(v["params"]["env"]["ZNDRAW_TOKEN"], "tok");
        // A line break between tokens becomes a space: the same JSON, one line.
        let task = Task::new("t", "a:b:c", "r", "{\"a\":\r\n [1,\n2]}").unwrap();
        let line = request_line(1, &task, &[]);
        let text = std::str::from_utf8(&line).unwrap();
        assert_eq!(text.matches('\n').count(), 1);
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(v["params"]["payload"], serde_json::json!({"a": [1, 2]}));
    }

    #[test]
    fn replies() {
        let ok = r#"{"jsonrpc":"2.0","id":3,"result":{"status":"completed"}}"#;
        assert_eq!(parse_reply(ok, 3), Ok(Some(Ok(()))));
        let failed = r#"{"jsonrpc":"2.0","id":3,"result":{"status":"failed","error":"ValueError: dx"}}"#;
        assert_eq!(parse_reply(failed, 3), Ok(Some(Err("ValueError: dx".to_owned()))));
        let error = r#"{"jsonrpc":"2.0","id":3,"error":{"code":-32000,"message":"boom"}}"#;
        assert_eq!(parse_reply(error, 3), Ok(Some(Err("boom".to_owned()))));
        let note = r#"{"jsonrpc":"2.0","method":"progress","params":{}}"#;
        assert_eq!(parse_reply(note, 3), Ok(None));
        assert!(
            parse_reply(ok, 2)
                .unwrap_err()
                .contains("request 3 while request 2")
        );
        assert!(parse_reply("hello world", 3).unwrap_err().contains("not JSON"));
        assert!(parse_reply("[1]", 3).unwrap_err().contains("not a JSON object"));
        let weird = r#"{"jsonrpc":"2.0","id":3,"result":{"status":"done"}}"#;
        assert!(parse_reply(weird, 3).unwrap_err().contains("\"done\""));
        let long = format!(
            r#"{{"jsonrpc":"2.0","id":1,"result":{{"status":"failed","error":"{}"}}}}"#,
            "é".repeat(5000)
        );
        let Ok(Some(Err(text))) = parse_reply(&long, 1) else {
            panic!("a long error is kept, cut")
        };
        assert!(text.len() <= ERROR_KEEP + 3 && text.ends_with('…'));
    }

    #[test]
    fn ready_messages() {
        let ready = r#"{"jsonrpc":"2.0","method":"ready","params":{"protocol":1}}"#;
        assert_eq!(parse_ready(ready), Ok(None));
        let with = r#"{"jsonrpc":"2.0","method":"ready","params":{"protocol":1,"schema":{"type":"object"}}}"#;
        assert_eq!(parse_ready(with), Ok(Some(serde_json::json!({"type": "object"}))));
        let v2 = r#"{"jsonrpc":"2.0","method":"ready","params":{"protocol":2}}"#;
        assert!(
            parse_ready(v2)
                .unwrap_err()
                .contains("protocol 2; this worker speaks 1")
        );
        assert!(
            parse_ready("Loading model…")
                .unwrap_err()
                .contains("not the ready message")
        );
        let bad = r#"{"jsonrpc":"2.0","method":"ready","params":{"protocol":1,"schema":[1]}}"#;
        assert!(parse_ready(bad).is_err());
    }

    #[test]
    fn token_notifications_are_one_line() {
        let line = token_line("a\nb\"c");
        let text = std::str::from_utf8(&line).unwrap();
        assert_eq!(text.matches('\n').count(), 1);
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(v["params"]["token"], "a\nb\"c");
        assert_eq!(v["method"], "token");
    }
}
