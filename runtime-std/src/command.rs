//! Tasks run by an external command (what `outage-worker` does): the
//! payload as JSON on stdin, exit status 0 → completed, anything else →
//! failed with the end of stderr. The program runs directly, never through
//! a shell.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::{Handler, Task, TaskResult};

/// A [`Handler`] that runs `program args…` once per task.
///
/// The task's payload goes to stdin as JSON; `OUTAGE_TASK_ID`, `OUTAGE_JOB`
/// and `OUTAGE_ROOM` are set in its environment; stdout is logged at debug
/// level. If the worker abandons the task (shutdown), the process is killed.
#[derive(Debug, Clone)]
pub struct Command {
    program: Arc<str>,
    args: Arc<[String]>,
}

impl Command {
    /// Run `program` with `args` (no shell: no splitting, quoting or globbing).
    pub fn new(program: impl Into<String>, args: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Command {
            program: Arc::from(program.into()),
            args: args.into_iter().map(Into::into).collect(),
        }
    }
}

impl Handler for Command {
    fn run(&self, task: Task) -> Pin<Box<dyn Future<Output = TaskResult> + Send + 'static>> {
        Box::pin(run_command(self.program.clone(), self.args.clone(), task))
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

async fn run_command(program: Arc<str>, args: Arc<[String]>, task: Task) -> Result<(), String> {
    use async_process::{Command, Stdio};
    use futures_lite::AsyncWriteExt;

    let mut child = Command::new(&*program)
        .args(args.iter())
        .env("OUTAGE_TASK_ID", &task.id)
        .env("OUTAGE_JOB", &task.job_name)
        .env("OUTAGE_ROOM", &task.room_id)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    // The payload goes in exactly as the server sent it, written while the
    // command's output is read: a command that echoes a large payload
    // cannot block on a full stdout pipe while we block on its stdin.
    let stdin = child.stdin.take();
    let feed = async {
        if let Some(mut stdin) = stdin {
            // A command that does not read its stdin is fine.
            let _ = stdin.write_all(task.payload_json().as_bytes()).await;
            let _ = stdin.close().await;
        }
    };
    let (_, out) = futures_lite::future::zip(feed, child.output()).await;
    let out = out.map_err(|e| format!("{program} failed: {e}"))?;
    if !out.stdout.is_empty() {
        let text = String::from_utf8_lossy(&out.stdout);
        crate::emit(&outage_core::Event::TaskOutput { output: text.trim() });
    }
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let why = match out.status.code() {
        Some(code) => format!("exit status {code}"),
        None => "killed by a signal".to_owned(),
    };
    let tail = tail(&stderr, 2000);
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
    fn stderr_tail() {
        assert_eq!(tail("  short \n", 10), "short");
        assert_eq!(tail("0123456789abc", 3), "abc");
        assert_eq!(tail("ééé", 3), "é");
    }
}
