//! One protocol-level test list, run against the Rust test job server and
//! the real ZnDraw job server (`../shared/jobserver`): every endpoint,
//! status and body shape a worker relies on. A plain HTTP client, no worker.

use std::fmt::Display;
use std::net::SocketAddr;
use std::time::Duration;

use outage_tests::http::{self, Connection, Response};
use outage_tests::real::RealServer;
use outage_tests::server::TestServer;
use serde_json::{Value, json};

const API: &str = "/v1/joblib";
const ZERO: &str = "00000000-0000-0000-0000-000000000000";

struct Target {
    name: &'static str,
    addr: SocketAddr,
    token: String,
    passed: u32,
    failed: Vec<String>,
}

impl Target {
    fn new(name: &'static str, url: &str, token: &str) -> Target {
        Target {
            name,
            addr: http::addr_of(url).expect("server URL"),
            token: token.to_owned(),
            passed: 0,
            failed: Vec::new(),
        }
    }

    fn check(&mut self, what: &str, ok: bool, context: impl Display) {
        if ok {
            self.passed += 1;
        } else {
            self.failed.push(format!("{what}: {context}"));
        }
    }

    /// `status` expected; returns the response for further checks.
    fn expect(&mut self, what: &str, want: u16, resp: Response) -> Response {
        let ok = resp.status == want;
        self.check(
            what,
            ok,
            format_args!("got {} want {want}; body {}", resp.status, resp.text()),
        );
        resp
    }

    fn call(&mut self, method: &str, path: &str, body: Option<&Value>) -> Response {
        let bytes = body.map(|b| serde_json::to_vec(b).unwrap());
        http::api(self.addr, &self.token, method, path, bytes.as_deref())
            .unwrap_or_else(|e| panic!("{}: {method} {path}: {e}", self.name))
    }

    /// An API call whose JSON body is sent exactly as given.
    fn call_text(&mut self, method: &str, path: &str, body: &str) -> Response {
        http::api(self.addr, &self.token, method, path, Some(body.as_bytes()))
            .unwrap_or_else(|e| panic!("{}: {method} {path}: {e}", self.name))
    }

    fn raw(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Response {
        http::request(self.addr, method, &format!("{API}{path}"), headers, body)
            .unwrap_or_else(|e| panic!("{}: {method} {path}: {e}", self.name))
    }

    fn problem(&mut self, what: &str, resp: &Response, status: u16, kind: &str) {
        let ct = resp.header("content-type").unwrap_or_default().to_owned();
        self.check(
            &format!("{what} is problem+json"),
            ct == "application/problem+json",
            &ct,
        );
        let j = resp.json();
        self.check(&format!("{what} type"), j["type"] == kind, &j);
        self.check(&format!("{what} status field"), j["status"] == status, &j);
        self.check(&format!("{what} title"), j["title"].is_string(), &j);
        self.check(&format!("{what} detail"), j["detail"].is_string(), &j);
    }

    fn finish(self) {
        println!(
            "{}: {} passed, {} failed",
            self.name,
            self.passed,
            self.failed.len()
        );
        for f in &self.failed {
            println!("  FAIL {f}");
        }
        assert!(
            self.failed.is_empty(),
            "{}: {} checks failed:\n{}",
            self.name,
            self.failed.len(),
            self.failed.join("\n")
        );
        assert!(self.passed > 100, "the suite ran too few checks");
    }
}

fn is_uuid(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.len() == 36 && uuid::Uuid::parse_str(s).is_ok() && s == s.to_lowercase())
}

fn is_naive_timestamp(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| (s.len() == 19 || s.len() == 26) && &s[10..11] == "T" && !s.ends_with('Z'))
}

/// A payload full of numbers and strings a `serde_json::Value` (or a float)
/// round trip would change, written in the form the real server writes
/// (it parses payloads and writes them again through pydantic: compact,
/// `1e+308`, `1.5e-7`, `-0.0`, raw UTF-8), so that it comes back unchanged
/// from both servers: a 17-digit float, an integer beyond 64 bits, negative
/// zero, the smallest subnormal, a huge exponent (sent as `1e308` the real
/// server answers `1e+308`), escapes and non-ASCII.
const EXACT_PAYLOAD: &str = r#"{"x":0.9889559355234849,"big":123456789012345678901234567890,"neg":-0.0,"tiny":5e-324,"huge":1e+308,"s":"q\"b\\n\n\t\u0001é😀/","a":[1.5e-7,-2,true,null,{}]}"#;

/// The payload's JSON text exactly as the server sent it: in a task
/// answer (`{"payload": …}`) or a claim (`{"task": {"payload": …}}`).
fn payload_text(body: &[u8]) -> Option<String> {
    use serde_json::value::RawValue;
    #[derive(serde::Deserialize)]
    struct Task {
        payload: Box<RawValue>,
    }
    #[derive(serde::Deserialize)]
    struct Claim {
        task: Task,
    }
    serde_json::from_slice::<Claim>(body)
        .map(|c| c.task.payload)
        .or_else(|_| serde_json::from_slice::<Task>(body).map(|t| t.payload))
        .ok()
        .map(|p| p.get().to_owned())
}

/// A task listing with each payload's text as sent.
#[derive(serde::Deserialize)]
struct ListedPayloads {
    items: Vec<Listed>,
}

#[derive(serde::Deserialize)]
struct Listed {
    payload: Box<serde_json::value::RawValue>,
}

/// Payload text byte for byte (submission, claim, task answer, listing),
/// room ids that need JSON escapes, and a room's task listing.
fn exact_payloads_and_escaped_rooms(t: &mut Target) {
    let r = t.call("POST", "/workers", None);
    let wx = r.json()["id"].as_str().unwrap_or_default().to_owned();
    let reg = json!({"category": "modifiers", "name": "Exact", "schema": {}, "worker_id": wx});
    let r = t.call("PUT", "/rooms/@global/jobs", Some(&reg));
    t.expect("register @global:modifiers:Exact", 201, r);

    let job = "@global:modifiers:Exact";
    let body = format!(r#"{{"payload":{EXACT_PAYLOAD}}}"#);
    let r = t.call_text("POST", &format!("/rooms/room1/tasks/{job}"), &body);
    let r = t.expect("submit a payload of tricky numbers and strings", 202, r);
    let id = r.json()["id"].as_str().unwrap_or_default().to_owned();
    let text = payload_text(&r.body);
    t.check(
        "submit echoes the payload byte for byte",
        text.as_deref() == Some(EXACT_PAYLOAD),
        format_args!("{text:?}"),
    );
    let r = t.call("POST", "/tasks/claim", Some(&json!({"worker_id": wx})));
    let r = t.expect("claim the tricky payload", 200, r);
    t.check("it is the task", r.json()["task"]["id"] == id.as_str(), r.text());
    let text = payload_text(&r.body);
    t.check(
        "a claim carries the payload byte for byte",
        text.as_deref() == Some(EXACT_PAYLOAD),
        format_args!("{text:?}"),
    );
    let r = t.call("GET", &format!("/tasks/{id}"), None);
    let text = payload_text(&r.body);
    t.check(
        "a task answer carries the payload byte for byte",
        text.as_deref() == Some(EXACT_PAYLOAD),
        format_args!("{text:?}"),
    );

    // The room r\x: a backslash, escaped in every JSON answer.
    let reg = json!({"category": "analysis", "name": "Esc", "schema": {}, "worker_id": wx});
    let r = t.call("PUT", "/rooms/r%5Cx/jobs", Some(&reg));
    let r = t.expect("register in the room r\\x", 201, r);
    let j = r.json();
    t.check("its room_id", j["room_id"] == "r\\x", &j);
    t.check("its full_name", j["full_name"] == "r\\x:analysis:Esc", &j);
    let r = t.call(
        "POST",
        "/rooms/r%5Cx/tasks/r%5Cx:analysis:Esc",
        Some(&json!({"payload": {}})),
    );
    let r = t.expect("submit in the room r\\x", 202, r);
    t.check(
        "the room is escaped on the wire",
        r.text().contains(r#""room_id":"r\\x""#),
        r.text(),
    );
    let r = t.call(
        "POST",
        r#"/rooms/r"q/tasks/r%5Cx:analysis:Esc"#,
        Some(&json!({"payload": {}})),
    );
    let r = t.expect("submit in the room r\"q", 202, r);
    t.check("room r\"q", r.json()["room_id"] == "r\"q", r.text());
    for (what, room_id) in [("first", "r\\x"), ("second", "r\"q")] {
        let r = t.call("POST", "/tasks/claim", Some(&json!({"worker_id": wx})));
        let r = t.expect(&format!("claim the {what} escaped-room task"), 200, r);
        let task = r.json()["task"].clone();
        t.check("claimed job_name", task["job_name"] == "r\\x:analysis:Esc", &task);
        t.check("claimed room_id", task["room_id"] == room_id, &task);
    }
    let r = t.call(
        "POST",
        "/rooms/r%2Fx/tasks/r%5Cx:analysis:Esc",
        Some(&json!({"payload": {}})),
    );
    t.expect("an encoded slash splits the path (no route)", 404, r);

    // A room's task listing: newest first, filtered, paged, payloads verbatim.
    let body = format!(r#"{{"payload":{EXACT_PAYLOAD}}}"#);
    let r = t.call_text("POST", &format!("/rooms/listing/tasks/{job}"), &body);
    let older = r.json()["id"].as_str().unwrap_or_default().to_owned();
    let r = t.call(
        "POST",
        &format!("/rooms/listing/tasks/{job}"),
        Some(&json!({"payload": {"n": 2}})),
    );
    let newer = r.json()["id"].as_str().unwrap_or_default().to_owned();
    let r = t.call("GET", "/rooms/listing/tasks", None);
    let r = t.expect("list a room's tasks", 200, r);
    let j = r.json();
    t.check(
        "the listing counts both",
        j["total"] == 2 && j["limit"] == 50 && j["offset"] == 0,
        &j,
    );
    t.check(
        "newest first",
        j["items"][0]["id"] == newer.as_str() && j["items"][1]["id"] == older.as_str(),
        &j,
    );
    let listed = serde_json::from_slice::<ListedPayloads>(&r.body)
        .ok()
        .and_then(|l| l.items.get(1).map(|i| i.payload.get().to_owned()));
    t.check(
        "a listing carries the payload byte for byte",
        listed.as_deref() == Some(EXACT_PAYLOAD),
        format_args!("{listed:?}"),
    );
    let r = t.call("GET", "/rooms/listing/tasks?status=pending&limit=1", None);
    let r = t.expect("list with a status filter and a limit", 200, r);
    let j = r.json();
    t.check(
        "one item of two pending",
        j["total"] == 2 && j["limit"] == 1 && j["items"].as_array().map(Vec::len) == Some(1),
        &j,
    );
    let r = t.call("GET", "/rooms/listing/tasks?status=claimed", None);
    t.check("no claimed task", r.json()["total"] == 0, r.text());
    let r = t.call("GET", "/rooms/listing/tasks?status=bogus", None);
    let r = t.expect("list with a bad status", 422, r);
    t.check("422 detail list", r.json()["detail"].is_array(), r.text());
    let r = t.call("GET", "/rooms/listing/tasks?limit=501", None);
    t.expect("list with a limit over 500", 422, r);
    let r = t.call("GET", "/rooms/a:b/tasks", None);
    let r = t.expect("list an invalid room", 400, r);
    t.problem("list invalid room", &r, 400, "/v1/problems/invalid-room-id");

    let r = t.call("DELETE", &format!("/workers/{wx}"), None);
    t.expect("delete the exact-payload worker", 204, r);
}

fn run_suite(t: &mut Target) {
    let job = "@global:modifiers:Conform";

    // ---------------------------------------------------------------- auth
    let r = t.raw("POST", "/workers", &[], None);
    let r = t.expect("create worker without token", 401, r);
    t.check("401 body", r.text() == r#"{"detail":"Unauthorized"}"#, r.text());
    t.check(
        "401 is plain JSON",
        r.header("content-type") == Some("application/json"),
        format_args!("{:?}", r.headers),
    );
    let r = t.raw("POST", "/workers", &[("Authorization", "Bearer nope")], None);
    t.expect("create worker with wrong token", 401, r);
    let r = t.raw("PATCH", "/workers/not-a-uuid", &[], None);
    t.expect("auth is checked before validation", 401, r);

    // ---------------------------------------------------------------- worker + job
    let r = t.call("POST", "/workers", None);
    let r = t.expect("create worker", 201, r);
    let w = r.json()["id"].as_str().unwrap_or_default().to_owned();
    t.check(
        "worker id is a lowercase UUID",
        is_uuid(&r.json()["id"]),
        r.text(),
    );
    t.check(
        "last_heartbeat is naive ISO 8601",
        is_naive_timestamp(&r.json()["last_heartbeat"]),
        r.text(),
    );

    let schema = json!({"type": "object", "properties": {"x": {"type": "integer"}}});
    let reg = json!({"category": "modifiers", "name": "Conform", "schema": schema, "worker_id": w});
    let r = t.call("PUT", "/rooms/@global/jobs", Some(&reg));
    let r = t.expect("register job (new)", 201, r);
    let j = r.json();
    t.check("register returns full_name", j["full_name"] == job, &j);
    t.check("register echoes worker_id", j["worker_id"] == w.as_str(), &j);
    t.check("register lists the worker", j["workers"] == json!([w]), &j);
    t.check("register returns the schema", j["schema"] == schema, &j);
    t.check("register returns a job id", is_uuid(&j["id"]), &j);
    let r = t.call("PUT", "/rooms/@global/jobs", Some(&reg));
    t.expect("register again (idempotent)", 200, r);
    let other =
        json!({"category": "modifiers", "name": "Conform", "schema": {"type": "string"}, "worker_id": w});
    let r = t.call("PUT", "/rooms/@global/jobs", Some(&other));
    let r = t.expect("register with another schema", 409, r);
    t.problem("schema conflict", &r, 409, "/v1/problems/schema-conflict");
    t.check(
        "schema conflict detail",
        r.json()["detail"] == format!("Schema mismatch for job '{job}'").as_str(),
        r.text(),
    );
    let r = t.call(
        "PUT",
        "/rooms/@global/jobs",
        Some(&json!({"category": "bogus", "name": "X", "worker_id": w})),
    );
    let r = t.expect("register with a bad category", 400, r);
    t.problem("bad category", &r, 400, "/v1/problems/invalid-category");
    let r = t.call(
        "PUT",
        "/rooms/a:b/jobs",
        Some(&json!({"category": "modifiers", "name": "X", "worker_id": w})),
    );
    let r = t.expect("register in an invalid room", 400, r);
    t.problem("invalid room", &r, 400, "/v1/problems/invalid-room-id");
    let r = t.call(
        "PUT",
        "/rooms/@global/jobs",
        Some(&json!({"category": "modifiers", "name": "X", "worker_id": ZERO})),
    );
    let r = t.expect("register for an unknown worker", 404, r);
    t.problem(
        "unknown worker on register",
        &r,
        404,
        "/v1/problems/worker-not-found",
    );
    let r = t.call("PUT", "/rooms/@global/jobs", Some(&json!({"name": "X"})));
    let r = t.expect("register without category", 422, r);
    t.check("422 detail is a list", r.json()["detail"].is_array(), r.text());

    // ---------------------------------------------------------------- submit
    let mut tasks = Vec::new();
    for i in 1..=3 {
        let r = t.call(
            "POST",
            &format!("/rooms/room1/tasks/{job}"),
            Some(&json!({"payload": {"x": i}})),
        );
        let r = t.expect(&format!("submit task {i}"), 202, r);
        let j = r.json();
        t.check("submitted task is pending", j["status"] == "pending", &j);
        t.check("queue position", j["queue_position"] == i, &j);
        t.check("payload echoed", j["payload"] == json!({"x": i}), &j);
        t.check("created_at naive", is_naive_timestamp(&j["created_at"]), &j);
        let id = j["id"].as_str().unwrap_or_default().to_owned();
        t.check(
            "Location header",
            r.header("location") == Some(format!("{API}/tasks/{id}").as_str()),
            format_args!("{:?}", r.header("location")),
        );
        t.check(
            "Retry-After header",
            r.header("retry-after") == Some("1"),
            format_args!("{:?}", r.headers),
        );
        tasks.push(id);
    }
    let encoded = "%40global%3Amodifiers%3AConform";
    let r = t.call(
        "POST",
        &format!("/rooms/room1/tasks/{encoded}"),
        Some(&json!({"payload": {"x": 99}})),
    );
    let r = t.expect("submit with a percent-encoded job name", 202, r);
    let extra = r.json()["id"].as_str().unwrap_or_default().to_owned();
    let r = t.call(
        "POST",
        "/rooms/room1/tasks/@global:modifiers:Nope",
        Some(&json!({"payload": {}})),
    );
    let r = t.expect("submit to an unknown job", 404, r);
    t.problem("unknown job", &r, 404, "/v1/problems/job-not-found");
    let auth = format!("Bearer {}", t.token);
    let r = t.raw(
        "POST",
        &format!("/rooms/room1/tasks/{job}"),
        &[("Authorization", &auth)],
        Some(br#"{"payload":{}}"#),
    );
    t.expect("submit without Content-Type", 422, r);
    let r = t.call("GET", &format!("/tasks/{}", tasks[0]), None);
    let r = t.expect("get a pending task", 200, r);
    t.check(
        "pending task has its queue position",
        r.json()["queue_position"] == 1,
        r.text(),
    );

    // ---------------------------------------------------------------- claim, run, complete
    let claim = json!({"worker_id": w});
    let r = t.call("POST", "/tasks/claim", Some(&claim));
    let r = t.expect("claim #1", 200, r);
    let task = r.json()["task"].clone();
    t.check("claim is FIFO", task["id"] == tasks[0].as_str(), &task);
    t.check("claimed status", task["status"] == "claimed", &task);
    t.check("claimed payload", task["payload"] == json!({"x": 1}), &task);
    t.check("claimed by us", task["worker_id"] == w.as_str(), &task);
    t.check("claimed job_name", task["job_name"] == job, &task);
    t.check("claimed room_id", task["room_id"] == "room1", &task);
    t.check(
        "claimed queue_position null",
        task["queue_position"].is_null(),
        &task,
    );
    let t1 = tasks[0].clone();
    let r = t.call(
        "PATCH",
        &format!("/tasks/{t1}"),
        Some(&json!({"status": "completed"})),
    );
    let r = t.expect("claimed -> completed is refused", 409, r);
    t.problem("bad transition", &r, 409, "/v1/problems/invalid-task-transition");
    t.check(
        "bad transition detail",
        r.json()["detail"] == "Cannot transition from 'claimed' to 'completed'",
        r.text(),
    );
    let r = t.call(
        "PATCH",
        &format!("/tasks/{t1}"),
        Some(&json!({"status": "running"})),
    );
    let r = t.expect("claimed -> running", 200, r);
    t.check(
        "running sets started_at",
        is_naive_timestamp(&r.json()["started_at"]),
        r.text(),
    );
    let r = t.call(
        "PATCH",
        &format!("/tasks/{t1}"),
        Some(&json!({"status": "completed"})),
    );
    let r = t.expect("running -> completed", 200, r);
    t.check("completed status", r.json()["status"] == "completed", r.text());
    t.check(
        "completed sets completed_at",
        is_naive_timestamp(&r.json()["completed_at"]),
        r.text(),
    );
    let r = t.call(
        "PATCH",
        &format!("/tasks/{t1}"),
        Some(&json!({"status": "running"})),
    );
    t.expect("completed -> running is refused", 409, r);

    // ---------------------------------------------------------------- claim, run, fail
    let r = t.call("POST", "/tasks/claim", Some(&claim));
    let r = t.expect("claim #2", 200, r);
    t.check(
        "claim #2 is task 2",
        r.json()["task"]["id"] == tasks[1].as_str(),
        r.text(),
    );
    let t2 = tasks[1].clone();
    let r = t.call(
        "PATCH",
        &format!("/tasks/{t2}"),
        Some(&json!({"status": "running"})),
    );
    t.expect("task 2 running", 200, r);
    let r = t.call(
        "PATCH",
        &format!("/tasks/{t2}"),
        Some(&json!({"status": "failed", "error": "boom: conformance"})),
    );
    let r = t.expect("running -> failed with error", 200, r);
    t.check("failed status", r.json()["status"] == "failed", r.text());
    t.check("error stored", r.json()["error"] == "boom: conformance", r.text());
    let r = t.call("GET", &format!("/tasks/{t2}"), None);
    let r = t.expect("get task 2", 200, r);
    t.check("task 2 still failed", r.json()["status"] == "failed", r.text());
    let r = t.call(
        "PATCH",
        &format!("/tasks/{t2}"),
        Some(&json!({"status": "bogus"})),
    );
    let r = t.expect("bad status value", 422, r);
    t.check("422 detail list", r.json()["detail"].is_array(), r.text());
    let r = t.call(
        "PATCH",
        &format!("/tasks/{ZERO}"),
        Some(&json!({"status": "running"})),
    );
    let r = t.expect("update an unknown task", 404, r);
    t.problem("unknown task", &r, 404, "/v1/problems/task-not-found");
    t.check(
        "unknown task detail",
        r.json()["detail"] == format!("Task '{ZERO}' not found").as_str(),
        r.text(),
    );
    let r = t.call("GET", &format!("/tasks/{ZERO}"), None);
    t.expect("get an unknown task", 404, r);

    // ---------------------------------------------------------------- claim, cancel path
    let r = t.call("POST", "/tasks/claim", Some(&claim));
    let r = t.expect("claim #3", 200, r);
    let t3 = r.json()["task"]["id"].as_str().unwrap_or_default().to_owned();
    t.check("claim #3 is task 3", t3 == tasks[2], r.text());
    let r = t.call(
        "PATCH",
        &format!("/tasks/{t3}"),
        Some(&json!({"status": "failed", "error": "never started"})),
    );
    t.expect("claimed -> failed", 200, r);
    let r = t.call("POST", "/tasks/claim", Some(&claim));
    let r = t.expect("claim #4", 200, r);
    t.check(
        "claim #4 is the percent-encoded submission",
        r.json()["task"]["id"] == extra.as_str(),
        r.text(),
    );
    let r = t.call(
        "PATCH",
        &format!("/tasks/{extra}"),
        Some(&json!({"status": "cancelled"})),
    );
    t.expect("claimed -> cancelled", 200, r);

    // ---------------------------------------------------------------- empty queue and bad claims
    let r = t.call("POST", "/tasks/claim", Some(&claim));
    let r = t.expect("claim on an empty queue", 200, r);
    t.check(
        "empty claim is exactly {\"task\":null}",
        r.text() == r#"{"task":null}"#,
        r.text(),
    );
    let r = t.call("POST", "/tasks/claim", Some(&json!({"worker_id": ZERO})));
    let r = t.expect("claim for an unknown worker", 404, r);
    t.problem("claim unknown worker", &r, 404, "/v1/problems/worker-not-found");
    t.check(
        "claim 404 detail",
        r.json()["detail"] == format!("Worker {ZERO} not found").as_str(),
        r.text(),
    );
    let r = t.call("POST", "/tasks/claim", Some(&json!({"worker_id": "nope"})));
    t.expect("claim with a malformed worker id", 422, r);
    let r = t.call("POST", "/tasks/claim", Some(&json!({})));
    t.expect("claim without worker id", 422, r);

    // ---------------------------------------------------------------- heartbeat
    let r = t.call("PATCH", &format!("/workers/{w}"), None);
    let r = t.expect("heartbeat", 200, r);
    t.check("heartbeat returns the id", r.json()["id"] == w.as_str(), r.text());
    t.check(
        "heartbeat returns last_heartbeat",
        is_naive_timestamp(&r.json()["last_heartbeat"]),
        r.text(),
    );
    let r = t.call("PATCH", &format!("/workers/{}", w.to_uppercase()), None);
    t.expect("heartbeat with an upper-case id", 200, r);
    let r = t.call("PATCH", &format!("/workers/{ZERO}"), None);
    let r = t.expect("heartbeat for an unknown worker", 404, r);
    t.problem(
        "heartbeat unknown worker",
        &r,
        404,
        "/v1/problems/worker-not-found",
    );
    t.check(
        "heartbeat 404 detail",
        r.json()["detail"] == format!("Worker '{ZERO}' not found").as_str(),
        r.text(),
    );
    let r = t.raw(
        "PATCH",
        &format!("/workers/{w}"),
        &[("Authorization", "Bearer wrong")],
        None,
    );
    t.expect("heartbeat with a bad token", 401, r);
    let r = t.call("PATCH", &format!("/workers/{w}/"), None);
    let r = t.expect("trailing slash redirects", 307, r);
    t.check(
        "redirect drops the slash",
        r.header("location")
            .is_some_and(|l| l.ends_with(&format!("{API}/workers/{w}"))),
        format_args!("{:?}", r.header("location")),
    );
    let r = t.call("PATCH", "/workers/not-a-uuid", None);
    t.expect("heartbeat with a malformed id", 422, r);

    // ---------------------------------------------------------------- routing
    let r = t.call("GET", "/nothing-here", None);
    let r = t.expect("unknown path", 404, r);
    t.check(
        "unknown path body",
        r.text() == r#"{"detail":"Not Found"}"#,
        r.text(),
    );
    let r = t.call("DELETE", "/tasks/claim", None);
    let r = t.expect("wrong method", 405, r);
    t.check(
        "405 body",
        r.text() == r#"{"detail":"Method Not Allowed"}"#,
        r.text(),
    );

    // ---------------------------------------------------------------- disconnect
    let r = t.call(
        "POST",
        &format!("/rooms/room1/tasks/{job}"),
        Some(&json!({"payload": {"x": 4}})),
    );
    let r = t.expect("submit task 4", 202, r);
    let t4 = r.json()["id"].as_str().unwrap_or_default().to_owned();
    let r = t.call("POST", "/tasks/claim", Some(&claim));
    t.expect("claim task 4", 200, r);
    let r = t.call("DELETE", &format!("/workers/{w}"), None);
    let r = t.expect("delete worker", 204, r);
    t.check("204 has an empty body", r.body.is_empty(), r.text());
    let r = t.call("GET", &format!("/tasks/{t4}"), None);
    let r = t.expect("get task 4 after delete", 200, r);
    t.check(
        "claimed task failed on delete",
        r.json()["status"] == "failed",
        r.text(),
    );
    t.check(
        "with 'Worker disconnected'",
        r.json()["error"] == "Worker disconnected",
        r.text(),
    );
    t.check("and no worker", r.json()["worker_id"].is_null(), r.text());
    let r = t.call("PATCH", &format!("/workers/{w}"), None);
    t.expect("heartbeat after delete", 404, r);
    let r = t.call("DELETE", &format!("/workers/{w}"), None);
    let r = t.expect("delete again", 404, r);
    t.problem("delete unknown worker", &r, 404, "/v1/problems/worker-not-found");
    let r = t.call(
        "POST",
        &format!("/rooms/room1/tasks/{job}"),
        Some(&json!({"payload": {}})),
    );
    t.expect("submit to an orphaned job", 404, r);

    // A new worker revives the soft-deleted job, even with another schema.
    let r = t.call("POST", "/workers", None);
    let w2 = r.json()["id"].as_str().unwrap_or_default().to_owned();
    let revive =
        json!({"category": "modifiers", "name": "Conform", "schema": {"type": "string"}, "worker_id": w2});
    let r = t.call("PUT", "/rooms/@global/jobs", Some(&revive));
    t.expect("register an orphaned job again", 201, r);
    // Without worker_id the server makes a new worker.
    let r = t.call(
        "PUT",
        "/rooms/@global/jobs",
        Some(&json!({"category": "analysis", "name": "Solo", "schema": {}})),
    );
    let r = t.expect("register without worker_id", 201, r);
    t.check(
        "a new worker is made",
        is_uuid(&r.json()["worker_id"]) && r.json()["worker_id"] != w2.as_str(),
        r.text(),
    );
    let r = t.call("DELETE", &format!("/workers/{w2}"), None);
    t.expect("delete the second worker", 204, r);

    // ---------------------------------------------------------------- payload text, escaped rooms
    exact_payloads_and_escaped_rooms(t);

    // ---------------------------------------------------------------- keep-alive
    let auth = format!("Bearer {}", t.token);
    let mut conn = Connection::open(t.addr).expect("connect");
    let a = conn
        .send(
            "POST",
            &format!("{API}/workers"),
            &[("Authorization", &auth)],
            None,
        )
        .expect("first request");
    let b = conn
        .send(
            "POST",
            &format!("{API}/workers"),
            &[("Authorization", &auth)],
            None,
        )
        .expect("second request");
    t.check(
        "keep-alive serves two requests on one connection",
        a.status == 201 && b.status == 201,
        b.status,
    );
    t.check(
        "keep-alive responses are HTTP/1.1 with a length",
        a.header("content-length").is_some(),
        format_args!("{:?}", a.headers),
    );
    let open_after_3s = !conn.closed_by_peer_within(Duration::from_secs(3)).expect("read");
    t.check(
        "idle connection still open after 3 s",
        open_after_3s,
        "closed early",
    );
    let closed = conn.closed_by_peer_within(Duration::from_secs(4)).expect("read");
    t.check(
        "idle connection closed by the server after ~5 s",
        closed,
        "still open after 7 s",
    );
}

#[test]
fn rust_test_server_conforms() {
    let server = TestServer::start().expect("start the test server");
    let mut t = Target::new("rust test server", &server.url(), server.token());
    run_suite(&mut t);
    t.finish();
}

/// The test server keeps any payload text, also forms the real server
/// would rewrite (it sends `1e308` back as `1e+308`, `\u00e9` as `é`).
#[test]
fn rust_test_server_keeps_payload_text() {
    let server = TestServer::start().expect("start the test server");
    let mut t = Target::new("rust test server", &server.url(), server.token());
    let w = t.call("POST", "/workers", None).json()["id"].clone();
    let reg = json!({"category": "modifiers", "name": "Raw", "schema": {}, "worker_id": w});
    t.call("PUT", "/rooms/@global/jobs", Some(&reg));
    for payload in [
        r#"{"x":0.9889559355234849,"big":123456789012345678901234567890,"neg":-0.0,"tiny":5e-324,"huge":1e308}"#,
        r#"{ "spaced" : [ 1E2 , -0 , 1.0 ] , "esc" : "caf\u00e9 \/ \ud83d\ude00" }"#,
        r#"{"dup":1,"dup":2}"#,
    ] {
        let r = t.call_text(
            "POST",
            "/rooms/room1/tasks/@global:modifiers:Raw",
            &format!(r#"{{"payload":{payload}}}"#),
        );
        t.expect("submit", 202, r);
        let r = t.call("POST", "/tasks/claim", Some(&json!({"worker_id": w})));
        let text = payload_text(&r.body);
        t.check(
            "claimed byte for byte",
            text.as_deref() == Some(payload),
            format_args!("{text:?} for {payload}"),
        );
    }
    assert_eq!(t.passed, 6, "{:?}", t.failed);
    assert!(t.failed.is_empty(), "{}", t.failed.join("\n"));
}

#[test]
fn real_server_conforms() {
    let server = RealServer::start().expect("start the real job server (see ../shared/jobserver/README.md)");
    let mut t = Target::new("real zndraw-joblib server", server.url(), server.token());
    run_suite(&mut t);
    t.finish();
}
