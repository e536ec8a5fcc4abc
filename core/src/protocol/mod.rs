//! The worker-facing protocol of zndraw-joblib 0.1.7 (`/v1/joblib`): its
//! routes, the login form, and the bodies a worker writes and the answers
//! it reads ([`body`]: without serde, through a sink and into caller
//! buffers; both runtimes use it, so each byte is encoded and parsed in one
//! place). The serde types below describe the same bodies for clients and
//! test servers (a worker does not use them on its wire).
//!
//! Bodies are JSON; errors are RFC 9457 `application/problem+json`
//! ([`Problem`]), except 401 which is `{"detail":"Unauthorized"}`.
//! Payloads and schemas are generic so that a host can use `serde_json`
//! values and a device its own fixed types (or `serde::de::IgnoredAny`).
//!
//! Borrowed `&str` fields need JSON strings without escapes; the server's
//! ids and timestamps never have any, but room and job names may, so
//! [`TaskRecord`] takes a string type of the caller's.

use core::fmt;
use serde::{Deserialize, Serialize};

use crate::Endpoint;

pub mod body;

/// The API prefix every route starts with.
pub const API_PREFIX: &str = "/v1/joblib";

/// The job categories zndraw-joblib allows by default.
pub const CATEGORIES: [&str; 3] = ["modifiers", "selections", "analysis"];

/// A task's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    /// Submitted, not yet claimed.
    Pending,
    /// Claimed by a worker.
    Claimed,
    /// The worker is running it.
    Running,
    /// Finished successfully.
    Completed,
    /// Finished with an error.
    Failed,
    /// Cancelled by a client.
    Cancelled,
}

impl TaskStatus {
    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Claimed => "claimed",
            TaskStatus::Running => "running",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    /// Completed, failed or cancelled: no way out.
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled
        )
    }

    /// The server's transition rule: pending→claimed|cancelled,
    /// claimed→running|failed|cancelled, running→completed|failed|cancelled.
    /// (claimed→completed is refused with 409: send `running` first.)
    pub const fn can_become(self, next: TaskStatus) -> bool {
        use TaskStatus::*;
        matches!(
            (self, next),
            (Pending, Claimed | Cancelled)
                | (Claimed, Running | Failed | Cancelled)
                | (Running, Completed | Failed | Cancelled)
        )
    }
}

/// `POST /tasks/claim` body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimRequest<'a> {
    /// The claiming worker.
    pub worker_id: &'a str,
}

/// `POST /tasks/claim` answer: `{"task": null}` or `{"task": {...}}`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ClaimResponse<T> {
    /// The claimed task, if the queue had one.
    pub task: Option<T>,
}

/// A task record as the server sends it (unknown fields are ignored): the
/// serde shape, for clients and test servers (a worker reads a claim with
/// [`body::claimed`]; each runtime's `Task` is what its handlers get).
///
/// The strings are a type of the caller's (`String`, `heapless::String<N>`):
/// the server accepts room and job names with characters JSON escapes
/// (`"r\\x"`), which a borrowed `&str` cannot hold.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct TaskRecord<S, P> {
    /// Task UUID.
    pub id: S,
    /// `{room}:{category}:{name}` of its job.
    pub job_name: S,
    /// Room it was submitted in.
    pub room_id: S,
    /// State.
    pub status: TaskStatus,
    /// The client's payload.
    pub payload: P,
}

/// `GET /tasks/{id}` answer: the fields a worker checks.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct TaskInfo<S> {
    /// State.
    pub status: TaskStatus,
    /// The worker holding it (`null` when none, or after its worker was
    /// deleted).
    #[serde(default)]
    pub worker_id: Option<S>,
}

/// `PATCH /tasks/{id}` body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct StatusUpdate<'a> {
    /// The new state.
    pub status: TaskStatus,
    /// Error text, for `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
}

/// `PUT /rooms/{room}/jobs` body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct JobRegistration<'a, S> {
    /// One of [`CATEGORIES`].
    pub category: &'a str,
    /// Job name.
    pub name: &'a str,
    /// JSON schema of the payload.
    pub schema: S,
    /// The worker to link; without it the server creates a new worker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<&'a str>,
}

/// `PUT /rooms/{room}/jobs` answer (the fields a worker needs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub struct JobResponse<'a> {
    /// Job UUID.
    pub id: &'a str,
    /// `{room}:{category}:{name}`.
    pub full_name: &'a str,
    /// The linked worker.
    #[serde(default)]
    pub worker_id: Option<&'a str>,
}

/// `POST /workers` and `PATCH /workers/{id}` answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub struct WorkerResponse<'a> {
    /// Worker UUID.
    pub id: &'a str,
    /// Last heartbeat, ISO 8601 (naive UTC on SQLite).
    #[serde(default)]
    pub last_heartbeat: Option<&'a str>,
}

/// `POST /rooms/{room}/tasks/{job}` body (clients).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Submission<P> {
    /// The task's payload.
    pub payload: P,
}

/// An RFC 9457 problem, as zndraw-joblib sends it (`type` is a relative
/// URI such as `/v1/problems/worker-not-found`; no `instance`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem<'a> {
    /// Problem type URI.
    #[serde(rename = "type")]
    pub kind: &'a str,
    /// Short title (the status's reason phrase).
    pub title: &'a str,
    /// HTTP status.
    pub status: u16,
    /// Human-readable detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<&'a str>,
}

/// Problem types zndraw-joblib uses.
pub mod problem_type {
    /// 404, heartbeat/claim/delete of an unknown worker.
    pub const WORKER_NOT_FOUND: &str = "/v1/problems/worker-not-found";
    /// 404, unknown task.
    pub const TASK_NOT_FOUND: &str = "/v1/problems/task-not-found";
    /// 404, unknown or orphaned job.
    pub const JOB_NOT_FOUND: &str = "/v1/problems/job-not-found";
    /// 409, bad task transition.
    pub const INVALID_TASK_TRANSITION: &str = "/v1/problems/invalid-task-transition";
    /// 409, same job name with another schema.
    pub const SCHEMA_CONFLICT: &str = "/v1/problems/schema-conflict";
    /// 400, category not allowed.
    pub const INVALID_CATEGORY: &str = "/v1/problems/invalid-category";
    /// 400, room id with `@` or `:`.
    pub const INVALID_ROOM_ID: &str = "/v1/problems/invalid-room-id";
    /// 403, non-superuser on `@global`.
    pub const FORBIDDEN: &str = "/v1/problems/forbidden";
}

/// Is `token` a bearer token RFC 6750 allows (`b64token`: letters, digits,
/// `-._~+/`, then any `=` padding)? ZnDraw's JWTs and static tokens are.
/// Anything else — a space, CR or LF, a non-ASCII character — would break
/// the `Authorization` header or inject another one, so workers refuse it
/// at startup.
pub fn is_valid_token(token: &str) -> bool {
    let b = token.as_bytes();
    let body = b.iter().position(|&c| c == b'=').unwrap_or(b.len());
    body > 0
        && b[..body]
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || b"-._~+/".contains(&c))
        && b[body..].iter().all(|&c| c == b'=')
}

/// HTTP methods the protocol uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Method {
    /// GET
    Get,
    /// POST
    Post,
    /// PUT
    Put,
    /// PATCH
    Patch,
    /// DELETE
    Delete,
}

impl Method {
    /// The method's name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

/// Every request of the protocol with its parameters; `Display` writes its
/// path (with [`API_PREFIX`], no trailing slash, segments percent-encoded
/// where needed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// `POST /workers`
    CreateWorker,
    /// `PUT /rooms/{room}/jobs`
    RegisterJob {
        /// Room (`@global` for all rooms).
        room: &'a str,
    },
    /// `POST /tasks/claim`
    Claim,
    /// `PATCH /tasks/{id}`
    TaskStatus {
        /// Task UUID.
        task_id: &'a str,
    },
    /// `PATCH /workers/{id}`
    Heartbeat {
        /// Worker UUID.
        worker_id: &'a str,
    },
    /// `DELETE /workers/{id}`
    Disconnect {
        /// Worker UUID.
        worker_id: &'a str,
    },
    /// `POST /rooms/{room}/tasks/{job}`
    Submit {
        /// Room to submit in.
        room: &'a str,
        /// Full job name `{room}:{category}:{name}`.
        job: &'a str,
    },
    /// `GET /tasks/{id}`
    GetTask {
        /// Task UUID.
        task_id: &'a str,
    },
}

impl Route<'_> {
    /// The HTTP method.
    pub const fn method(&self) -> Method {
        match self {
            Route::CreateWorker | Route::Claim | Route::Submit { .. } => Method::Post,
            Route::RegisterJob { .. } => Method::Put,
            Route::TaskStatus { .. } | Route::Heartbeat { .. } => Method::Patch,
            Route::Disconnect { .. } => Method::Delete,
            Route::GetTask { .. } => Method::Get,
        }
    }

    /// The endpoint, for [`crate::classify`].
    pub const fn endpoint(&self) -> Endpoint {
        match self {
            Route::CreateWorker => Endpoint::CreateWorker,
            Route::RegisterJob { .. } => Endpoint::RegisterJob,
            Route::Claim => Endpoint::Claim,
            Route::TaskStatus { .. } => Endpoint::TaskStatus,
            Route::Heartbeat { .. } => Endpoint::Heartbeat,
            Route::Disconnect { .. } => Endpoint::Disconnect,
            Route::Submit { .. } => Endpoint::Submit,
            Route::GetTask { .. } => Endpoint::GetTask,
        }
    }
}

impl Route<'_> {
    /// Writes the route's path (from [`API_PREFIX`] on) through `out`,
    /// piece by piece, its segments percent-encoded where needed: the one
    /// encoding of a path, for `Display` and for [`crate::wire`].
    pub fn write_path(&self, out: &mut dyn FnMut(&[u8]) -> Result<(), Full>) -> Result<(), Full> {
        let (first, a, second, b): (&str, &str, &str, &str) = match *self {
            Route::CreateWorker => ("/workers", "", "", ""),
            Route::RegisterJob { room } => ("/rooms/", room, "/jobs", ""),
            Route::Claim => ("/tasks/claim", "", "", ""),
            Route::TaskStatus { task_id } | Route::GetTask { task_id } => ("/tasks/", task_id, "", ""),
            Route::Heartbeat { worker_id } | Route::Disconnect { worker_id } => {
                ("/workers/", worker_id, "", "")
            }
            Route::Submit { room, job } => ("/rooms/", room, "/tasks/", job),
        };
        out(API_PREFIX.as_bytes())?;
        out(first.as_bytes())?;
        encode(a, is_pchar, out)?;
        out(second.as_bytes())?;
        encode(b, is_pchar, out)
    }
}

impl fmt::Display for Route<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Every piece is ASCII.
        self.write_path(&mut |b| {
            f.write_str(core::str::from_utf8(b).unwrap_or("?"))
                .map_err(|_| Full)
        })
        .map_err(|_| fmt::Error)
    }
}

pub use crate::json::Full;

/// The ASCII letters and digits and `more`, as a set of bytes (a bit per
/// ASCII byte, in 32-bit words: one test a byte, a few bytes of code on a
/// 32-bit device).
pub(crate) const fn ascii_set(more: &[u8]) -> [u32; 4] {
    // Digits; upper and lower case letters.
    let mut set = [0, 0x3ff << 16, 0x3ff_ffff << 1, 0x3ff_ffff << 1];
    let mut i = 0;
    while i < more.len() {
        set[(more[i] >> 5) as usize] |= 1 << (more[i] & 31);
        i += 1;
    }
    set
}

/// Is `b` in `set` (of [`ascii_set`])?
pub(crate) const fn in_set(set: &[u32; 4], b: u8) -> bool {
    b < 128 && set[(b >> 5) as usize] >> (b & 31) & 1 != 0
}

/// RFC 3986 `pchar` but `%` (so `@global:modifiers:Echo` stays readable
/// in a path, `a/b` becomes `a%2Fb`).
fn is_pchar(b: u8) -> bool {
    const PCHAR: [u32; 4] = ascii_set(b"-._~!$&'()*+,;=:@");
    in_set(&PCHAR, b)
}

/// RFC 3986 `unreserved`: what a form value keeps as it is.
fn is_unreserved(b: u8) -> bool {
    const UNRESERVED: [u32; 4] = ascii_set(b"-._~");
    in_set(&UNRESERVED, b)
}

/// Writes `s` through `out`, the bytes `keep` refuses percent-encoded:
/// runs of kept bytes in one piece each.
fn encode(s: &str, keep: fn(u8) -> bool, out: &mut dyn FnMut(&[u8]) -> Result<(), Full>) -> Result<(), Full> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let s = s.as_bytes();
    let mut run = 0;
    for (i, &b) in s.iter().enumerate() {
        if !keep(b) {
            if run < i {
                out(&s[run..i])?;
            }
            out(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]])?;
            run = i + 1;
        }
    }
    if run < s.len() { out(&s[run..]) } else { Ok(()) }
}

/// ZnDraw's login route (fastapi-users' JWT backend), under the server's
/// base path: a form answered with `{"access_token": …}`.
pub const LOGIN_PATH: &str = "/v1/auth/jwt/login";

/// Writes ZnDraw's login form (`POST /v1/auth/jwt/login`, fastapi-users'
/// OAuth2 password form): `username=<user>&password=<password>`,
/// `application/x-www-form-urlencoded`, every byte but the unreserved
/// ones percent-encoded (a space as `%20`, which every form parser reads).
pub fn write_login_form(
    user: &str,
    password: &str,
    out: &mut dyn FnMut(&[u8]) -> Result<(), Full>,
) -> Result<(), Full> {
    out(b"username=")?;
    encode(user, is_unreserved, out)?;
    out(b"&password=")?;
    encode(password, is_unreserved, out)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;

    #[test]
    fn routes() {
        let w = "20e2e4de-f22c-4885-8120-142dd3475d22";
        assert_eq!(Route::CreateWorker.to_string(), "/v1/joblib/workers");
        assert_eq!(
            Route::RegisterJob { room: "@global" }.to_string(),
            "/v1/joblib/rooms/@global/jobs"
        );
        assert_eq!(Route::Claim.to_string(), "/v1/joblib/tasks/claim");
        assert_eq!(
            Route::Heartbeat { worker_id: w }.to_string(),
            std::format!("/v1/joblib/workers/{w}")
        );
        assert_eq!(Route::Heartbeat { worker_id: w }.method(), Method::Patch);
        assert_eq!(Route::Disconnect { worker_id: w }.method(), Method::Delete);
        assert_eq!(
            Route::Submit {
                room: "room1",
                job: "@global:modifiers:Echo"
            }
            .to_string(),
            "/v1/joblib/rooms/room1/tasks/@global:modifiers:Echo"
        );
        assert_eq!(
            Route::TaskStatus { task_id: "a/b c" }.to_string(),
            "/v1/joblib/tasks/a%2Fb%20c"
        );
        assert_eq!(Route::GetTask { task_id: "x" }.endpoint(), Endpoint::GetTask);
    }

    #[test]
    fn bearer_tokens() {
        for ok in [
            "secret",
            "dev-token",
            "real-0123abcd",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.sig_-",
            "abc+/==",
        ] {
            assert!(is_valid_token(ok), "{ok}");
        }
        for bad in [
            "",
            "a b",
            "tok\r\nX-Evil: 1",
            "t\u{e9}",
            "=abc",
            "ab=c",
            "a\tb",
            "a\"b",
        ] {
            assert!(!is_valid_token(bad), "{bad:?}");
        }
    }

    #[test]
    fn transitions_match_the_server() {
        use TaskStatus::*;
        assert!(Pending.can_become(Claimed));
        assert!(Claimed.can_become(Running));
        assert!(!Claimed.can_become(Completed));
        assert!(Running.can_become(Failed));
        for t in [Completed, Failed, Cancelled] {
            assert!(t.is_terminal());
            for n in [Pending, Claimed, Running, Completed, Failed, Cancelled] {
                assert!(!t.can_become(n));
            }
        }
    }

    #[test]
    fn bodies_with_serde_json_core() {
        let mut buf = [0u8; 128];
        let n = serde_json_core::to_slice(
            &StatusUpdate {
                status: TaskStatus::Completed,
                error: None,
            },
            &mut buf,
        )
        .unwrap();
        assert_eq!(&buf[..n], br#"{"status":"completed"}"#);
        let n = serde_json_core::to_slice(
            &StatusUpdate {
                status: TaskStatus::Failed,
                error: Some("boom"),
            },
            &mut buf,
        )
        .unwrap();
        assert_eq!(&buf[..n], br#"{"status":"failed","error":"boom"}"#);
        let n = serde_json_core::to_slice(&ClaimRequest { worker_id: "w" }, &mut buf).unwrap();
        assert_eq!(&buf[..n], br#"{"worker_id":"w"}"#);

        type DeviceTask = TaskRecord<heapless::String<64>, serde::de::IgnoredAny>;
        let empty: ClaimResponse<DeviceTask> = serde_json_core::from_slice(br#"{"task":null}"#).unwrap().0;
        assert!(empty.task.is_none());
        let body = br#"{"task":{"id":"ef81d82c-0cdb-4b06-a3d4-e4df27161b69","job_name":"@global:modifiers:Echo","room_id":"room1","status":"claimed","created_at":"2026-11-23T23:02:16.334469","started_at":null,"completed_at":null,"worker_id":"20e2e4de-f22c-4885-8120-142dd3475d22","error":null,"payload":{"a":1},"queue_position":null}}"#;
        let got: ClaimResponse<DeviceTask> = serde_json_core::from_slice(body).unwrap().0;
        let task = got.task.unwrap();
        assert_eq!(task.id, "ef81d82c-0cdb-4b06-a3d4-e4df27161b69");
        assert_eq!(task.status, TaskStatus::Claimed);
        assert_eq!(task.job_name, "@global:modifiers:Echo");
        // Escapes in names need the unescaping parser and owned strings.
        let body = br#"{"task":{"id":"t","job_name":"r\\x:modifiers:E\"q\u00e9","room_id":"r\\x","status":"claimed","payload":1}}"#;
        let mut scratch = [0u8; 64];
        let got: ClaimResponse<DeviceTask> =
            serde_json_core::from_slice_escaped(body, &mut scratch).unwrap().0;
        let task = got.task.unwrap();
        assert_eq!(task.room_id, "r\\x");
        assert_eq!(task.job_name, "r\\x:modifiers:E\"q\u{e9}");
        let info: TaskInfo<heapless::String<40>> =
            serde_json_core::from_slice(br#"{"id":"t","status":"running","worker_id":"w"}"#)
                .unwrap()
                .0;
        assert_eq!(info.status, TaskStatus::Running);
        assert_eq!(info.worker_id.as_deref(), Some("w"));
        let info: TaskInfo<heapless::String<40>> =
            serde_json_core::from_slice(br#"{"status":"failed","worker_id":null}"#)
                .unwrap()
                .0;
        assert_eq!(info.worker_id, None);
    }

    #[test]
    fn bodies_with_serde_json() {
        let reg = JobRegistration {
            category: "modifiers",
            name: "Echo",
            schema: serde_json::json!({"type": "object"}),
            worker_id: Some("w"),
        };
        assert_eq!(
            serde_json::to_string(&reg).unwrap(),
            r#"{"category":"modifiers","name":"Echo","schema":{"type":"object"},"worker_id":"w"}"#
        );
        let p: Problem<'_> = serde_json::from_str(
            r#"{"type":"/v1/problems/worker-not-found","title":"Not Found","status":404,"detail":"Worker 'x' not found"}"#,
        )
        .unwrap();
        assert_eq!(p.kind, problem_type::WORKER_NOT_FOUND);
        assert_eq!(p.status, 404);
        let w: WorkerResponse<'_> =
            serde_json::from_str(r#"{"id":"abc","last_heartbeat":"2026-11-23T23:02:16"}"#).unwrap();
        assert_eq!(w.id, "abc");
        let j: JobResponse<'_> = serde_json::from_str(
            r#"{"id":"j","room_id":"@global","category":"modifiers","name":"Echo","full_name":"@global:modifiers:Echo","schema":{},"workers":["w"],"worker_id":"w"}"#,
        )
        .unwrap();
        assert_eq!(j.full_name, "@global:modifiers:Echo");
    }
}
