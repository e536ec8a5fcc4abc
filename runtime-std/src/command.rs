//! Tasks run by an external command (what `outage-worker` does): the
//! payload on stdin exactly as the server sent it, exit status 0 →
//! completed, anything else → failed with the end of stderr. The program
//! runs directly, never through a shell.
//!
//! Process handling:
//! - the command runs in its own process group, so a terminal's Ctrl-C (or a
//!   signal to the worker's group) reaches the worker, which decides — the
//!   running task keeps its grace period;
//! - stdin is written while stdout and stderr are drained into bounded
//!   buffers, so a command that echoes a large payload cannot deadlock;
//! - a task ends when the command *exits*, not when its pipes close: a
//!   script that leaves `sleep 1000 &` behind is done when it exits;
//! - a task the worker abandons (its grace ran out, a hard stop) or that
//!   overruns its timeout has its whole group sent SIGTERM, then SIGKILL
//!   [`KILL_AFTER`] later if anything is left.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::{Handler, SharedToken, Task, TaskResult};

/// How long a process group gets between SIGTERM and SIGKILL.
pub const KILL_AFTER: Duration = Duration::from_secs(2);

/// Bytes of stdout kept (and logged at debug level); the rest is drained.
const STDOUT_KEEP: usize = 64 << 10;
/// Bytes of stderr kept: its end becomes the task's error.
const STDERR_KEEP: usize = 2000;
/// After the command exits, how long to keep reading what it wrote; a
/// pipe still held open by a process it left behind is not waited for.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(200);

/// Variables never passed on to a command: credentials of the worker.
const SECRET_VARS: [&str; 5] = [
    "OUTAGE_TOKEN",
    "OUTAGE_PASSWORD",
    "ZNDRAW_TOKEN",
    "ZNDRAW_PASSWORD",
    "JOBSERVER_TOKEN",
];

/// A [`Handler`] that runs `program args…` once per task.
///
/// The task's payload goes to stdin, byte for byte as the server sent it.
/// The command's environment is the worker's, without its credentials
/// (`OUTAGE_TOKEN`, `ZNDRAW_TOKEN`, `ZNDRAW_PASSWORD`, …), plus
/// `ZNDRAW_TASK_ID`, `ZNDRAW_JOB` and `ZNDRAW_ROOM` (the task's room; also
/// as `OUTAGE_TASK_ID`, `OUTAGE_JOB`, `OUTAGE_ROOM`), and with
/// [`Command::server`] `ZNDRAW_URL` and `ZNDRAW_TOKEN`, so that a command can
/// talk back to its room with ZnDraw's own client (`ZnDraw()` reads them).
/// stdout is logged at debug level.
#[derive(Debug, Clone)]
pub struct Command {
    program: Arc<str>,
    args: Arc<[String]>,
    server: Option<(Arc<str>, SharedToken)>,
    timeout: Option<Duration>,
}

impl Command {
    /// Run `program` with `args` (no shell: no splitting, quoting or globbing).
    pub fn new(program: impl Into<String>, args: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Command {
            program: Arc::from(program.into()),
            args: args.into_iter().map(Into::into).collect(),
            server: None,
            timeout: None,
        }
    }

    /// Give each command `ZNDRAW_URL` and `ZNDRAW_TOKEN`, so it can use the
    /// server itself (ZnDraw's Python client reads both). Pass the worker's
    /// [`WorkerBuilder::shared_token`](crate::WorkerBuilder::shared_token) so
    /// that a command always gets the current token after a renewal.
    pub fn server(mut self, url: impl Into<String>, token: impl Into<SharedToken>) -> Self {
        self.server = Some((Arc::from(url.into()), token.into()));
        self
    }

    /// Fail a task whose command runs longer than `limit` (its process
    /// group is killed).
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(limit);
        self
    }
}

impl Handler for Command {
    fn run(&self, task: Task) -> Pin<Box<dyn Future<Output = TaskResult> + Send + 'static>> {
        Box::pin(run_command(self.clone(), task))
    }
}

/// Keep the last `max` bytes of a command's stderr, on a char boundary.
pub fn tail(text: &str, max: usize) -> &str {
    let text = text.trim();
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// systemd's variables for the worker itself: a command must not notify
/// the service manager as if it were the worker, nor read its credentials.
const SERVICE_VARS: [&str; 4] = [
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "CREDENTIALS_DIRECTORY",
];

/// The worker's environment (`parent`) without its credentials and
/// service variables: what every process it starts inherits.
pub(crate) fn base_environment(
    parent: impl Iterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    parent
        .filter(|(k, _)| !SECRET_VARS.iter().chain(&SERVICE_VARS).any(|s| k == s))
        .collect()
}

/// A command's environment: the worker's (`parent`) without credentials,
/// plus the task's and ZnDraw's variables.
fn environment(
    parent: impl Iterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
    task: &Task,
    server: Option<&(Arc<str>, SharedToken)>,
) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    let mut env = base_environment(parent);
    let mut set = |k: &str, v: &str| env.push((k.into(), v.into()));
    for (names, value) in [
        (["ZNDRAW_TASK_ID", "OUTAGE_TASK_ID"], &task.id),
        (["ZNDRAW_JOB", "OUTAGE_JOB"], &task.job_name),
        (["ZNDRAW_ROOM", "OUTAGE_ROOM"], &task.room_id),
    ] {
        for name in names {
            set(name, value);
        }
    }
    if let Some((url, token)) = server {
        set("ZNDRAW_URL", url);
        set("ZNDRAW_TOKEN", &token.get());
    }
    env
}

/// Process groups sent SIGTERM and not yet gone; see [`wait_for_abandoned`].
static ABANDONED: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// Wait (at most [`KILL_AFTER`] and a little) until every process group
/// the worker abandoned is gone, sending SIGKILL where SIGTERM was not
/// enough. Call it before the process exits: the CLI does.
pub fn wait_for_abandoned() {
    let deadline = Instant::now() + KILL_AFTER + Duration::from_millis(500);
    loop {
        let left = ABANDONED.lock().unwrap_or_else(|e| e.into_inner()).len();
        if left == 0 || Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn group_alive(pgid: i32) -> bool {
    killpg(Pid::from_raw(pgid), None).is_ok()
}

/// SIGTERM to the group now, SIGKILL after [`KILL_AFTER`] if any of it is
/// left: on a thread of its own, so that it happens whatever the async
/// runtime does meanwhile.
pub(crate) fn terminate_group(pgid: i32) {
    if killpg(Pid::from_raw(pgid), Signal::SIGTERM).is_err() {
        return;
    }
    ABANDONED.lock().unwrap_or_else(|e| e.into_inner()).push(pgid);
    let reaper = move || {
        let deadline = Instant::now() + KILL_AFTER;
        while group_alive(pgid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        ABANDONED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|&g| g != pgid);
    };
    if std::thread::Builder::new()
        .name("outage-reaper".into())
        .spawn(reaper)
        .is_err()
    {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        ABANDONED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|&g| g != pgid);
    }
}

/// Owns a running command's process group: dropped before the command
/// exited (the task was abandoned, or timed out), it terminates the group.
struct Group {
    pgid: i32,
    exited: bool,
}

impl Drop for Group {
    fn drop(&mut self) {
        if !self.exited {
            terminate_group(self.pgid);
        }
    }
}

/// Read all of `r`, keeping the first `keep` bytes (`tail`: the last).
async fn drain(
    mut r: impl futures_lite::AsyncRead + Unpin,
    keep: usize,
    tail: bool,
    into: Arc<Mutex<Vec<u8>>>,
) {
    use futures_lite::AsyncReadExt;
    let mut chunk = [0u8; 8192];
    loop {
        let n = match r.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut kept = into.lock().unwrap_or_else(|e| e.into_inner());
        if tail {
            kept.extend_from_slice(&chunk[..n]);
            if kept.len() > 2 * keep {
                let cut = kept.len() - keep;
                kept.drain(..cut);
            }
        } else if kept.len() < keep {
            let room = keep - kept.len();
            kept.extend_from_slice(&chunk[..n.min(room)]);
        }
    }
}

async fn run_command(cmd: Command, task: Task) -> Result<(), String> {
    use async_process::Stdio;
    use futures_lite::{AsyncWriteExt, FutureExt};
    use std::os::unix::process::CommandExt;

    let program = cmd.program.clone();
    let mut std_cmd = std::process::Command::new(&*program);
    std_cmd
        .args(cmd.args.iter())
        .process_group(0)
        .env_clear()
        .envs(environment(std::env::vars_os(), &task, cmd.server.as_ref()));
    let mut child = async_process::Command::from(std_cmd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let mut group = Group {
        pgid: child.id() as i32,
        exited: false,
    };

    let stdout = Arc::new(Mutex::new(Vec::new()));
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(async_std::task::spawn(drain(
            out,
            STDOUT_KEEP,
            false,
            stdout.clone(),
        )));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(async_std::task::spawn(drain(
            err,
            STDERR_KEEP,
            true,
            stderr.clone(),
        )));
    }
    // The payload goes in exactly as the server sent it, while the output
    // is drained; a command that does not read its stdin is fine.
    let stdin = child.stdin.take();
    let feed = async {
        if let Some(mut stdin) = stdin {
            let _ = stdin.write_all(task.payload_json().as_bytes()).await;
            let _ = stdin.close().await;
        }
        // The task ends when the command exits, whatever its stdin.
        futures_lite::future::pending().await
    };
    let exited = child.status().or(feed);
    let status = match cmd.timeout {
        None => exited.await,
        Some(limit) => match async_std::future::timeout(limit, exited).await {
            Ok(status) => status,
            // Dropping `group` terminates the command's group.
            Err(_) => return Err(format!("task timed out after {}s", limit.as_secs_f32())),
        },
    };
    group.exited = true;
    let status = status.map_err(|e| format!("{program} failed: {e}"))?;
    // What it wrote before it exited; a pipe a leftover process still holds
    // is not waited for (its reader is cancelled).
    let mut readers: Vec<_> = readers.into_iter().map(Some).collect();
    let all_read = async {
        for r in readers.iter_mut() {
            if let Some(handle) = r.as_mut() {
                handle.await;
                *r = None;
            }
        }
    };
    let _ = async_std::future::timeout(DRAIN_AFTER_EXIT, all_read).await;
    for r in readers.into_iter().flatten() {
        r.cancel().await;
    }
    let out = std::mem::take(&mut *stdout.lock().unwrap_or_else(|e| e.into_inner()));
    if !out.is_empty() {
        let text = String::from_utf8_lossy(&out);
        crate::emit(&outage_core::Event::TaskOutput { output: text.trim() });
    }
    if status.success() {
        return Ok(());
    }
    let err = std::mem::take(&mut *stderr.lock().unwrap_or_else(|e| e.into_inner()));
    let stderr = String::from_utf8_lossy(&err);
    let why = match status.code() {
        Some(code) => format!("exit status {code}"),
        None => "killed by a signal".to_owned(),
    };
    let tail = tail(&stderr, STDERR_KEEP);
    Err(if tail.is_empty() {
        why
    } else {
        format!("{why}: {tail}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_get_no_credentials_of_the_worker() {
        let parent = [
            ("PATH", "/bin"),
            ("OUTAGE_TOKEN", "secret-1"),
            ("ZNDRAW_TOKEN", "secret-2"),
            ("ZNDRAW_PASSWORD", "secret-3"),
            ("OUTAGE_PASSWORD", "secret-4"),
            ("CREDENTIALS_DIRECTORY", "/run/credentials/secret-5"),
            ("NOTIFY_SOCKET", "/run/systemd/notify-secret-6"),
            ("HOME", "/root"),
        ]
        .map(|(k, v)| (k.into(), v.into()));
        let task = Task::new("t1", "@global:modifiers:E", "room1", "{}").unwrap();
        let env = environment(parent.clone().into_iter(), &task, None);
        let shown = format!("{env:?}");
        assert!(!shown.contains("secret"), "{shown}");
        let get = |env: &[(std::ffi::OsString, std::ffi::OsString)], k: &str| {
            env.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        };
        assert_eq!(get(&env, "PATH"), Some("/bin".into()));
        assert_eq!(get(&env, "ZNDRAW_ROOM"), Some("room1".into()));
        assert_eq!(get(&env, "ZNDRAW_TASK_ID"), Some("t1".into()));
        assert_eq!(get(&env, "ZNDRAW_JOB"), Some("@global:modifiers:E".into()));
        assert_eq!(get(&env, "ZNDRAW_TOKEN"), None);
        // With the server: the worker's current token, on purpose.
        let server = (Arc::from("http://h:1"), SharedToken::from("tok"));
        let env = environment(parent.into_iter(), &task, Some(&server));
        assert_eq!(get(&env, "ZNDRAW_URL"), Some("http://h:1".into()));
        assert_eq!(get(&env, "ZNDRAW_TOKEN"), Some("tok".into()));
        assert!(!format!("{env:?}").contains("secret"));
    }

    #[test]
    fn stderr_tail() {
        assert_eq!(tail("  short \n", 10), "short");
        assert_eq!(tail("0123456789abc", 3), "abc");
        assert_eq!(tail("ééé", 3), "é");
    }
}
