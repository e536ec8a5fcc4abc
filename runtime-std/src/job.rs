//! What a worker serves: jobs, the tasks claimed for them, and the
//! handlers that run them.
//!
//! Layering: near the bottom; imports nothing of the crate.

use std::future::Future;
use std::pin::Pin;

use serde_json::value::RawValue;

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

    /// Is `full_name` (a claimed task's `job_name`) this job? The core's
    /// rule, the device's too
    /// ([`outage_core::protocol::body::job_matches`]).
    pub fn matches(&self, full_name: &str) -> bool {
        outage_core::protocol::body::job_matches(&self.room, &self.category, &self.name, full_name)
    }

    /// `room:category:name`
    pub fn full_name(&self) -> String {
        format!("{}:{}:{}", self.room, self.category, self.name)
    }
}

/// A task claimed from the server.
///
/// Its payload is kept as the exact JSON text the server sent: no number is
/// rounded, no integer beyond 64 bits turned into a float, no key reordered.
/// Read it typed with [`Task::payload`] or raw with [`Task::payload_json`].
#[derive(Debug, Clone)]
pub struct Task {
    /// Task UUID.
    pub id: String,
    /// Full job name, `{room}:{category}:{name}`.
    pub job_name: String,
    /// The room it was submitted in.
    pub room_id: String,
    pub(crate) payload: Box<RawValue>,
}

impl Task {
    /// A task with `payload_json` as its payload (it must be one JSON
    /// value); for tests and for handlers called outside a worker.
    pub fn new(
        id: impl Into<String>,
        job_name: impl Into<String>,
        room_id: impl Into<String>,
        payload_json: impl Into<String>,
    ) -> Result<Task, serde_json::Error> {
        Ok(Task {
            id: id.into(),
            job_name: job_name.into(),
            room_id: room_id.into(),
            payload: RawValue::from_string(payload_json.into())?,
        })
    }

    /// The task's id and names without its payload: what the worker keeps
    /// while the handler owns the task (no copy of a large payload).
    pub(crate) fn header(&self) -> Task {
        Task {
            id: self.id.clone(),
            job_name: self.job_name.clone(),
            room_id: self.room_id.clone(),
            payload: RawValue::from_string("null".to_owned()).expect("null is JSON"),
        }
    }

    /// The payload as the exact JSON text the server sent.
    pub fn payload_json(&self) -> &str {
        self.payload.get()
    }

    /// The payload as a `T` (for example `serde_json::Value`, or a struct
    /// of your own; `&str` and `&RawValue` fields borrow from the task).
    pub fn payload<'a, T: serde::Deserialize<'a>>(&'a self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.payload.get())
    }
}

impl PartialEq for Task {
    fn eq(&self, other: &Task) -> bool {
        self.id == other.id
            && self.job_name == other.job_name
            && self.room_id == other.room_id
            && self.payload_json() == other.payload_json()
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
