//! The worker-facing API of zndraw-joblib 0.1.7, as a pure function from a
//! request to a reply over in-memory state. Same paths, status codes,
//! problem+json bodies and task transitions as the real server (the
//! conformance suite in `tests/tests/conformance.rs` runs against both).
//!
//! One deliberate difference: payloads are stored as the JSON text the
//! client sent and sent back verbatim (claims, task answers), where the real
//! server re-serialises them through Python (`1e308` comes back `1e+308`,
//! `"\u00e9"` as `"é"`, `1E2` as `100.0`). Payloads already in Python's
//! form (compact, `json.dumps`) come back byte-identical from both.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use outage_core::protocol::{API_PREFIX, CATEGORIES, TaskStatus, problem_type};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use uuid::Uuid;

/// One HTTP request, as the API sees it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Method, upper case.
    pub method: &'a str,
    /// Path without the query.
    pub path: &'a str,
    /// The query (after `?`), if any.
    pub query: Option<&'a str>,
    /// `Host` header, for redirects.
    pub host: Option<&'a str>,
    /// `Authorization` header.
    pub authorization: Option<&'a str>,
    /// `Content-Type` header.
    pub content_type: Option<&'a str>,
    /// Body bytes.
    pub body: &'a [u8],
}

/// One HTTP reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// `Content-Type`, if any.
    pub content_type: Option<&'static str>,
    /// Other headers.
    pub headers: Vec<(&'static str, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Reply {
    fn json<T: Serialize + ?Sized>(status: u16, body: &T) -> Reply {
        Reply {
            status,
            content_type: Some("application/json"),
            headers: Vec::new(),
            body: serde_json::to_vec(body).expect("JSON values serialise"),
        }
    }

    fn problem(status: u16, kind: &str, detail: String) -> Reply {
        let title = match status {
            400 => "Bad Request",
            403 => "Forbidden",
            404 => "Not Found",
            409 => "Conflict",
            _ => "Error",
        };
        let body = json!({"type": kind, "title": title, "status": status, "detail": detail});
        Reply {
            content_type: Some("application/problem+json"),
            ..Reply::json(status, &body)
        }
    }

    fn detail(status: u16, detail: &str) -> Reply {
        Reply::json(status, &json!({ "detail": detail }))
    }

    fn validation(kind: &str, loc: Value, msg: &str, input: Value) -> Reply {
        Reply::json(
            422,
            &json!({"detail": [{"type": kind, "loc": loc, "msg": msg, "input": input}]}),
        )
    }

    fn empty(status: u16) -> Reply {
        Reply {
            status,
            content_type: None,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
}

/// A worker as the server stores it.
#[derive(Debug, Clone)]
pub struct WorkerRecord {
    /// Last heartbeat (or creation) time, ISO 8601 naive UTC.
    pub last_heartbeat: String,
}

/// A job as the server stores it.
#[derive(Debug, Clone)]
pub struct JobRecord {
    /// Job UUID.
    pub id: Uuid,
    /// Room.
    pub room_id: String,
    /// Category.
    pub category: String,
    /// Name.
    pub name: String,
    /// JSON schema.
    pub schema: Value,
    /// Linked workers, in link order.
    pub workers: Vec<Uuid>,
    /// Soft-deleted (no workers and no pending tasks).
    pub deleted: bool,
}

/// A task as the server stores it.
#[derive(Debug, Clone)]
pub struct TaskRecord {
    /// Task UUID.
    pub id: Uuid,
    /// Full job name.
    pub job_name: String,
    /// Room it was submitted in.
    pub room_id: String,
    /// State.
    pub status: TaskStatus,
    /// Creation time.
    pub created_at: String,
    /// When it became `running`.
    pub started_at: Option<String>,
    /// When it reached a terminal state.
    pub completed_at: Option<String>,
    /// Claiming worker.
    pub worker_id: Option<Uuid>,
    /// Error text.
    pub error: Option<String>,
    /// Payload: the JSON text as submitted, sent back verbatim.
    pub payload: Box<RawValue>,
}

/// Everything the server knows. `Default` is an empty (freshly started) server.
#[derive(Debug, Default, Clone)]
pub struct State {
    /// Workers by id.
    pub workers: HashMap<Uuid, WorkerRecord>,
    /// Jobs by full name.
    pub jobs: HashMap<String, JobRecord>,
    /// Tasks by id.
    pub tasks: HashMap<Uuid, TaskRecord>,
    /// Task ids in submission order (claims are FIFO).
    pub order: Vec<Uuid>,
}

/// Server settings that shape answers.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The bearer token requests must carry.
    pub token: String,
    /// When true every request gets 401 (the token was revoked).
    pub revoked: bool,
    /// The token's user is a superuser (may register `@global` jobs).
    pub superuser: bool,
}

/// Current time as the real server prints it on SQLite: ISO 8601 without
/// offset, microseconds, fraction left out when zero.
pub fn timestamp() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = now.as_secs();
    let micros = now.subsec_micros();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil-from-days (Howard Hinnant), for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    let base = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}");
    if micros == 0 {
        base
    } else {
        format!("{base}.{micros:06}")
    }
}

/// A task as the server sends it: the real server's field order, and the
/// payload's text verbatim.
#[derive(Debug, Serialize)]
struct TaskJson<'a> {
    id: String,
    job_name: &'a str,
    room_id: &'a str,
    status: &'static str,
    created_at: &'a str,
    started_at: Option<&'a str>,
    completed_at: Option<&'a str>,
    worker_id: Option<String>,
    error: Option<&'a str>,
    payload: &'a RawValue,
    queue_position: Option<usize>,
}

impl TaskRecord {
    fn to_json(&self, queue_position: Option<usize>) -> TaskJson<'_> {
        TaskJson {
            id: self.id.to_string(),
            job_name: &self.job_name,
            room_id: &self.room_id,
            status: self.status.as_str(),
            created_at: &self.created_at,
            started_at: self.started_at.as_deref(),
            completed_at: self.completed_at.as_deref(),
            worker_id: self.worker_id.map(|w| w.to_string()),
            error: self.error.as_deref(),
            payload: &self.payload,
            queue_position,
        }
    }
}

/// `{"task": …}`, the claim answer.
#[derive(Debug, Serialize)]
struct ClaimJson<'a> {
    task: Option<TaskJson<'a>>,
}

impl State {
    /// Submit a task directly (tests use this to feed workers without HTTP).
    /// Returns `None` if the job is unknown or deleted.
    pub fn submit(&mut self, room: &str, job_name: &str, payload: Value) -> Option<Uuid> {
        let raw = serde_json::value::to_raw_value(&payload).expect("JSON values serialise");
        self.submit_raw(room, job_name, raw)
    }

    /// Submit a task whose payload is this JSON text, kept byte for byte.
    /// Returns `None` if the job is unknown or deleted.
    pub fn submit_raw(&mut self, room: &str, job_name: &str, payload: Box<RawValue>) -> Option<Uuid> {
        let job = self.jobs.get(job_name)?;
        if job.deleted {
            return None;
        }
        let id = Uuid::new_v4();
        self.tasks.insert(
            id,
            TaskRecord {
                id,
                job_name: job_name.to_owned(),
                room_id: room.to_owned(),
                status: TaskStatus::Pending,
                created_at: timestamp(),
                started_at: None,
                completed_at: None,
                worker_id: None,
                error: None,
                payload,
            },
        );
        self.order.push(id);
        Some(id)
    }

    fn queue_position(&self, task: &TaskRecord) -> Option<usize> {
        if task.status != TaskStatus::Pending {
            return None;
        }
        let ahead = self
            .order
            .iter()
            .filter_map(|id| self.tasks.get(id))
            .take_while(|t| t.id != task.id)
            .filter(|t| t.status == TaskStatus::Pending && t.job_name == task.job_name)
            .count();
        Some(ahead + 1)
    }

    fn task_json<'a>(&self, task: &'a TaskRecord) -> TaskJson<'a> {
        task.to_json(self.queue_position(task))
    }

    fn new_worker(&mut self) -> Uuid {
        let id = Uuid::new_v4();
        self.workers.insert(
            id,
            WorkerRecord {
                last_heartbeat: timestamp(),
            },
        );
        id
    }

    /// Delete a worker as `DELETE /workers/{id}` does: fail its claimed and
    /// running tasks, unlink its jobs, soft-delete jobs left with no worker
    /// and no pending task.
    pub fn delete_worker(&mut self, id: Uuid) -> bool {
        if self.workers.remove(&id).is_none() {
            return false;
        }
        let now = timestamp();
        for task in self.tasks.values_mut() {
            if task.worker_id == Some(id) && matches!(task.status, TaskStatus::Claimed | TaskStatus::Running)
            {
                task.status = TaskStatus::Failed;
                task.error = Some("Worker disconnected".into());
                task.worker_id = None;
                task.completed_at = Some(now.clone());
            }
        }
        let pending: Vec<String> = self
            .tasks
            .values()
            .filter(|t| t.status == TaskStatus::Pending)
            .map(|t| t.job_name.clone())
            .collect();
        for (name, job) in self.jobs.iter_mut() {
            job.workers.retain(|w| *w != id);
            if job.workers.is_empty() && !pending.contains(name) {
                job.deleted = true;
            }
        }
        true
    }
}

enum Route<'a> {
    Workers,
    Worker(&'a str),
    Jobs(&'a str),
    Submit(&'a str, &'a str),
    RoomTasks(&'a str),
    Claim,
    Task(&'a str),
}

impl Route<'_> {
    fn allowed(&self) -> &'static [&'static str] {
        match self {
            Route::Workers => &["POST", "GET"],
            Route::Worker(_) => &["PATCH", "DELETE"],
            Route::Jobs(_) => &["PUT"],
            Route::Submit(..) => &["POST"],
            Route::RoomTasks(_) => &["GET"],
            Route::Claim => &["POST"],
            Route::Task(_) => &["GET", "PATCH"],
        }
    }
}

fn route(rest: &str) -> Option<Route<'_>> {
    let segs: Vec<&str> = rest.strip_prefix('/')?.split('/').collect();
    match segs.as_slice() {
        ["workers"] => Some(Route::Workers),
        ["workers", id] if !id.is_empty() => Some(Route::Worker(id)),
        ["rooms", room, "jobs"] if !room.is_empty() => Some(Route::Jobs(room)),
        ["rooms", room, "tasks"] if !room.is_empty() => Some(Route::RoomTasks(room)),
        ["rooms", room, "tasks", job] if !room.is_empty() && !job.is_empty() => {
            Some(Route::Submit(room, job))
        }
        ["tasks", "claim"] => Some(Route::Claim),
        ["tasks", id] if !id.is_empty() => Some(Route::Task(id)),
        _ => None,
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_uuid(raw: &str, loc: &[&str]) -> Result<Uuid, Reply> {
    Uuid::parse_str(raw).map_err(|e| {
        Reply::validation(
            "uuid_parsing",
            json!(loc),
            &format!("Input should be a valid UUID, {e}"),
            json!(raw),
        )
    })
}

/// Parses a JSON object body the way FastAPI does (422 when it is not one).
fn json_body(req: &Request<'_>) -> Result<serde_json::Map<String, Value>, Reply> {
    let is_json = req.content_type.is_some_and(|c| {
        let c = c.to_ascii_lowercase();
        c.starts_with("application/json") || (c.starts_with("application/") && c.contains("+json"))
    });
    let text = String::from_utf8_lossy(req.body).into_owned();
    if !is_json {
        return Err(Reply::validation(
            "model_attributes_type",
            json!(["body"]),
            "Input should be a valid dictionary or object to extract fields from",
            json!(text),
        ));
    }
    match serde_json::from_slice::<Value>(req.body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(Reply::validation(
            "model_attributes_type",
            json!(["body"]),
            "Input should be a valid dictionary or object to extract fields from",
            other,
        )),
        Err(_) => Err(Reply::validation(
            "json_invalid",
            json!(["body", 0]),
            "JSON decode error",
            json!({}),
        )),
    }
}

fn required_str(map: &serde_json::Map<String, Value>, field: &str) -> Result<String, Reply> {
    match map.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(Reply::validation(
            "string_type",
            json!(["body", field]),
            "Input should be a valid string",
            other.clone(),
        )),
        None => Err(Reply::validation(
            "missing",
            json!(["body", field]),
            "Field required",
            Value::Object(map.clone()),
        )),
    }
}

fn valid_room(room: &str) -> Result<(), Reply> {
    if (room.contains('@') || room.contains(':')) && room != "@global" && room != "@internal" {
        return Err(Reply::problem(
            400,
            problem_type::INVALID_ROOM_ID,
            format!("Room ID '{room}' contains invalid characters (@ or :)"),
        ));
    }
    Ok(())
}

/// Answer one request. `state` is the server's memory, `settings` its auth.
pub fn handle(state: &mut State, settings: &Settings, req: &Request<'_>) -> Reply {
    // Starlette routes on the percent-decoded path: `r%5Cx` is the room
    // `r\x`, and `r%2Fx` is two segments (so no route).
    let decoded = percent_decode(req.path);
    let Some(rest) = decoded.strip_prefix(API_PREFIX) else {
        return Reply::detail(404, "Not Found");
    };
    let route_match = match route(rest) {
        Some(r) => r,
        None => {
            // Starlette redirects a trailing slash to the path without it.
            if let Some(trimmed) = rest.strip_suffix('/')
                && !trimmed.is_empty()
                && route(trimmed).is_some()
            {
                let host = req.host.unwrap_or("127.0.0.1");
                let mut r = Reply::empty(307);
                r.headers
                    .push(("location", format!("http://{host}{API_PREFIX}{trimmed}")));
                return r;
            }
            return Reply::detail(404, "Not Found");
        }
    };
    let allowed = route_match.allowed();
    if !allowed.contains(&req.method) {
        let mut r = Reply::detail(405, "Method Not Allowed");
        r.headers.push(("allow", allowed.join(", ")));
        return r;
    }
    let expected = format!("Bearer {}", settings.token);
    if settings.revoked || req.authorization != Some(expected.as_str()) {
        return Reply::detail(401, "Unauthorized");
    }
    let result = match (route_match, req.method) {
        (Route::Workers, "POST") => Ok(create_worker(state)),
        (Route::Workers, _) => Ok(list_workers(state)),
        (Route::Worker(id), "PATCH") => heartbeat(state, id),
        (Route::Worker(id), _) => delete_worker(state, id),
        (Route::Jobs(room), _) => register_job(state, settings, room, req),
        (Route::Submit(room, job), _) => submit(state, room, job, req),
        (Route::RoomTasks(room), _) => list_tasks(state, room, req),
        (Route::Claim, _) => claim(state, req),
        (Route::Task(id), "GET") => get_task(state, id),
        (Route::Task(id), _) => update_task(state, id, req),
    };
    result.unwrap_or_else(|reply| reply)
}

fn create_worker(state: &mut State) -> Reply {
    let id = state.new_worker();
    let w = &state.workers[&id];
    Reply::json(
        201,
        &json!({"id": id.to_string(), "last_heartbeat": w.last_heartbeat}),
    )
}

fn list_workers(state: &State) -> Reply {
    let items: Vec<Value> = state
        .workers
        .iter()
        .map(|(id, w)| {
            let jobs = state.jobs.values().filter(|j| j.workers.contains(id)).count();
            json!({"id": id.to_string(), "last_heartbeat": w.last_heartbeat, "job_count": jobs})
        })
        .collect();
    let total = items.len();
    Reply::json(
        200,
        &json!({"items": items, "total": total, "limit": 50, "offset": 0}),
    )
}

fn worker_not_found(id: Uuid) -> Reply {
    Reply::problem(
        404,
        problem_type::WORKER_NOT_FOUND,
        format!("Worker '{id}' not found"),
    )
}

fn heartbeat(state: &mut State, raw: &str) -> Result<Reply, Reply> {
    let id = parse_uuid(raw, &["path", "worker_id"])?;
    let w = state.workers.get_mut(&id).ok_or_else(|| worker_not_found(id))?;
    w.last_heartbeat = timestamp();
    Ok(Reply::json(
        200,
        &json!({"id": id.to_string(), "last_heartbeat": w.last_heartbeat}),
    ))
}

fn delete_worker(state: &mut State, raw: &str) -> Result<Reply, Reply> {
    let id = parse_uuid(raw, &["path", "worker_id"])?;
    if !state.delete_worker(id) {
        return Err(worker_not_found(id));
    }
    // uvicorn sends the JSON content type even on an empty 204.
    Ok(Reply {
        content_type: Some("application/json"),
        ..Reply::empty(204)
    })
}

fn register_job(
    state: &mut State,
    settings: &Settings,
    room: &str,
    req: &Request<'_>,
) -> Result<Reply, Reply> {
    let body = json_body(req)?;
    let category = required_str(&body, "category")?;
    let name = required_str(&body, "name")?;
    let schema = body.get("schema").cloned().unwrap_or_else(|| json!({}));
    let worker_id = match body.get("worker_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(parse_uuid(s, &["body", "worker_id"])?),
        Some(other) => {
            return Err(Reply::validation(
                "uuid_type",
                json!(["body", "worker_id"]),
                "UUID input should be a string, bytes or UUID object",
                other.clone(),
            ));
        }
    };
    valid_room(room)?;
    if !CATEGORIES.contains(&category.as_str()) {
        return Err(Reply::problem(
            400,
            problem_type::INVALID_CATEGORY,
            format!("Category '{category}' not in allowed list: ['modifiers', 'selections', 'analysis']"),
        ));
    }
    if (room == "@global" || room == "@internal") && !settings.superuser {
        return Err(Reply::problem(
            403,
            problem_type::FORBIDDEN,
            "Admin required for @global/@internal job registration".into(),
        ));
    }
    let worker = match worker_id {
        Some(id) if state.workers.contains_key(&id) => id,
        Some(id) => {
            return Err(Reply::problem(
                404,
                problem_type::WORKER_NOT_FOUND,
                format!("Worker '{id}' not found or not owned by user"),
            ));
        }
        None => state.new_worker(),
    };
    let full_name = format!("{room}:{category}:{name}");
    let status = match state.jobs.get_mut(&full_name) {
        Some(job) if !job.deleted => {
            if job.schema != schema {
                return Err(Reply::problem(
                    409,
                    problem_type::SCHEMA_CONFLICT,
                    format!("Schema mismatch for job '{full_name}'"),
                ));
            }
            if !job.workers.contains(&worker) {
                job.workers.push(worker);
            }
            200
        }
        Some(job) => {
            // A soft-deleted job comes back with the new schema.
            job.deleted = false;
            job.schema = schema;
            job.workers = vec![worker];
            201
        }
        None => {
            state.jobs.insert(
                full_name.clone(),
                JobRecord {
                    id: Uuid::new_v4(),
                    room_id: room.to_owned(),
                    category: category.clone(),
                    name: name.clone(),
                    schema,
                    workers: vec![worker],
                    deleted: false,
                },
            );
            201
        }
    };
    let job = &state.jobs[&full_name];
    let workers: Vec<String> = job.workers.iter().map(Uuid::to_string).collect();
    Ok(Reply::json(
        status,
        &json!({
            "id": job.id.to_string(),
            "room_id": job.room_id,
            "category": job.category,
            "name": job.name,
            "full_name": full_name,
            "schema": job.schema,
            "workers": workers,
            "worker_id": worker.to_string(),
        }),
    ))
}

/// The submission body with the payload's text as sent.
#[derive(Deserialize)]
struct SubmitBody {
    payload: Option<Box<RawValue>>,
}

fn submit(state: &mut State, room: &str, job: &str, req: &Request<'_>) -> Result<Reply, Reply> {
    json_body(req)?;
    valid_room(room)?;
    let payload = serde_json::from_slice::<SubmitBody>(req.body)
        .ok()
        .and_then(|b| b.payload)
        .unwrap_or_else(|| RawValue::from_string("{}".into()).expect("valid JSON"));
    let id = state
        .submit_raw(room, job, payload)
        .ok_or_else(|| Reply::problem(404, problem_type::JOB_NOT_FOUND, format!("Job '{job}' not found")))?;
    let task = &state.tasks[&id];
    let mut reply = Reply::json(202, &state.task_json(task));
    reply
        .headers
        .push(("location", format!("{API_PREFIX}/tasks/{id}")));
    reply.headers.push(("retry-after", "1".into()));
    Ok(reply)
}

/// `{"items": […], "total", "limit", "offset"}`, as the real server pages.
#[derive(Debug, Serialize)]
struct Page<'a> {
    items: Vec<TaskJson<'a>>,
    total: usize,
    limit: usize,
    offset: usize,
}

/// A query parameter (percent-decoded; `+` is a space).
fn query_param(req: &Request<'_>, name: &str) -> Option<String> {
    req.query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(&k.replace('+', " ")) == name).then(|| percent_decode(&v.replace('+', " ")))
    })
}

/// A bounded integer query parameter, validated as FastAPI does.
fn int_param(req: &Request<'_>, name: &str, default: usize, max: Option<usize>) -> Result<usize, Reply> {
    let Some(raw) = query_param(req, name) else {
        return Ok(default);
    };
    let loc = json!(["query", name]);
    let n: i64 = raw.trim().parse().map_err(|_| {
        Reply::validation(
            "int_parsing",
            loc.clone(),
            "Input should be a valid integer, unable to parse string as an integer",
            json!(raw),
        )
    })?;
    if n < 0 {
        return Err(Reply::validation(
            "greater_than_equal",
            loc,
            "Input should be greater than or equal to 0",
            json!(raw),
        ));
    }
    match max {
        Some(m) if n as usize > m => Err(Reply::validation(
            "less_than_equal",
            loc,
            &format!("Input should be less than or equal to {m}"),
            json!(raw),
        )),
        _ => Ok(n as usize),
    }
}

/// `GET /rooms/{room}/tasks[?status=…&limit=…&offset=…]`: the room's tasks,
/// newest first.
fn list_tasks(state: &State, room: &str, req: &Request<'_>) -> Result<Reply, Reply> {
    let status = match query_param(req, "status") {
        None => None,
        Some(raw) => Some(
            serde_json::from_value::<TaskStatus>(Value::String(raw.clone())).map_err(|_| {
                Reply::validation(
                    "enum",
                    json!(["query", "status"]),
                    "Input should be 'pending', 'claimed', 'running', 'completed', 'failed' or 'cancelled'",
                    json!(raw),
                )
            })?,
        ),
    };
    let limit = int_param(req, "limit", 50, Some(500))?;
    let offset = int_param(req, "offset", 0, None)?;
    valid_room(room)?;
    // Newest first: submission order reversed (created_at, to the µs).
    let matching: Vec<&TaskRecord> = state
        .order
        .iter()
        .rev()
        .filter_map(|id| state.tasks.get(id))
        .filter(|t| t.room_id == room && status.is_none_or(|s| t.status == s))
        .collect();
    let items = matching
        .iter()
        .skip(offset)
        .take(limit)
        .map(|t| state.task_json(t))
        .collect();
    Ok(Reply::json(
        200,
        &Page {
            items,
            total: matching.len(),
            limit,
            offset,
        },
    ))
}

fn claim(state: &mut State, req: &Request<'_>) -> Result<Reply, Reply> {
    let body = json_body(req)?;
    let raw = required_str(&body, "worker_id")?;
    let worker = parse_uuid(&raw, &["body", "worker_id"])?;
    if !state.workers.contains_key(&worker) {
        return Err(Reply::problem(
            404,
            problem_type::WORKER_NOT_FOUND,
            format!("Worker {worker} not found"),
        ));
    }
    let next = state.order.iter().copied().find(|id| {
        let t = &state.tasks[id];
        t.status == TaskStatus::Pending
            && state
                .jobs
                .get(&t.job_name)
                .is_some_and(|j| !j.deleted && j.workers.contains(&worker))
    });
    let Some(id) = next else {
        return Ok(Reply::json(200, &ClaimJson { task: None }));
    };
    let task = state.tasks.get_mut(&id).expect("ids in order exist");
    task.status = TaskStatus::Claimed;
    task.worker_id = Some(worker);
    let task = &state.tasks[&id];
    Ok(Reply::json(
        200,
        &ClaimJson {
            task: Some(state.task_json(task)),
        },
    ))
}

fn task_not_found(id: Uuid) -> Reply {
    Reply::problem(
        404,
        problem_type::TASK_NOT_FOUND,
        format!("Task '{id}' not found"),
    )
}

fn get_task(state: &State, raw: &str) -> Result<Reply, Reply> {
    let id = parse_uuid(raw, &["path", "task_id"])?;
    let task = state.tasks.get(&id).ok_or_else(|| task_not_found(id))?;
    Ok(Reply::json(200, &state.task_json(task)))
}

fn update_task(state: &mut State, raw: &str, req: &Request<'_>) -> Result<Reply, Reply> {
    let id = parse_uuid(raw, &["path", "task_id"])?;
    let body = json_body(req)?;
    let status_raw = required_str(&body, "status")?;
    let status: TaskStatus = serde_json::from_value(Value::String(status_raw.clone())).map_err(|_| {
        Reply::validation(
            "enum",
            json!(["body", "status"]),
            "Input should be 'pending', 'claimed', 'running', 'completed', 'failed' or 'cancelled'",
            json!(status_raw),
        )
    })?;
    let error = match body.get("error") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            return Err(Reply::validation(
                "string_type",
                json!(["body", "error"]),
                "Input should be a valid string",
                other.clone(),
            ));
        }
    };
    let task = state.tasks.get_mut(&id).ok_or_else(|| task_not_found(id))?;
    if !task.status.can_become(status) {
        return Err(Reply::problem(
            409,
            problem_type::INVALID_TASK_TRANSITION,
            format!(
                "Cannot transition from '{}' to '{}'",
                task.status.as_str(),
                status.as_str()
            ),
        ));
    }
    task.status = status;
    let now = timestamp();
    if status == TaskStatus::Running {
        task.started_at = Some(now);
    } else if status.is_terminal() {
        task.completed_at = Some(now);
    }
    if error.is_some() {
        task.error = error;
    }
    let task = &state.tasks[&id];
    Ok(Reply::json(200, &state.task_json(task)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_look_like_sqlite_naive_iso() {
        let t = timestamp();
        assert_eq!(&t[4..5], "-");
        assert_eq!(&t[10..11], "T");
        assert!(t.len() == 19 || t.len() == 26, "{t}");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(
            percent_decode("%40global%3Amodifiers%3AEcho"),
            "@global:modifiers:Echo"
        );
        assert_eq!(percent_decode("100%"), "100%");
    }
}
