//! What a worker serves: jobs and the handlers that run their tasks.

use std::future::Future;
use std::pin::Pin;

use crate::Task;

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
///
/// A handler that panics — before its future exists or while it runs — has
/// its task reported `failed` ("handler panicked: …") and the worker goes
/// on. The panic still passes through the process's panic hook first,
/// which by default prints it (and a backtrace with `RUST_BACKTRACE`) to
/// stderr: an application that wants it in its own log installs a hook
/// (`std::panic::set_hook`); a library does not set a process-wide one.
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
