//! The bodies a worker sends and the answers it reads, in one place for
//! both runtimes: written through a sink (a device's buffer, a host's
//! `Vec`), read as byte slices of the answer (the caller unescapes what it
//! keeps, into its own buffer: [`json::unescape`], never longer than the
//! slice).
//!
//! Every answer reader is strict about the members the worker relies on
//! and ignores the rest, so that a newer server's added fields change
//! nothing: an answer without them is `Err(Failure::MalformedResponse)`
//! (for the core, an ambiguous answer, never a silent loss).

use super::{Full, StatusUpdate, TaskStatus};
use crate::Failure;
use crate::json::{self, member, member_span, write_string};

/// Where a body is written: pieces of bytes, in order.
pub type Out<'o> = &'o mut dyn FnMut(&[u8]) -> Result<(), Full>;

/// `POST /tasks/claim`: `{"worker_id":…}`.
pub fn claim(worker_id: &str, out: Out<'_>) -> Result<(), Full> {
    out(b"{\"worker_id\":")?;
    write_string(worker_id, out)?;
    out(b"}")
}

/// `PATCH /tasks/{id}`: `{"status":…}`, or `{"status":…,"error":…}`.
pub fn status(update: &StatusUpdate<'_>, out: Out<'_>) -> Result<(), Full> {
    out(b"{\"status\":\"")?;
    out(update.status.as_str().as_bytes())?;
    out(b"\"")?;
    if let Some(error) = update.error {
        out(b",\"error\":")?;
        write_string(error, out)?;
    }
    out(b"}")
}

/// `PUT /rooms/{room}/jobs`:
/// `{"category":…,"name":…,"schema":<schema>,"worker_id":…}`, `schema`
/// being JSON text sent as it is.
pub fn registration(
    category: &str,
    name: &str,
    schema: &[u8],
    worker_id: &str,
    out: Out<'_>,
) -> Result<(), Full> {
    out(b"{\"category\":")?;
    write_string(category, out)?;
    out(b",\"name\":")?;
    write_string(name, out)?;
    out(b",\"schema\":")?;
    out(schema)?;
    out(b",\"worker_id\":")?;
    write_string(worker_id, out)?;
    out(b"}")
}

const BAD: Failure = Failure::MalformedResponse;

/// The JSON string `value` (quotes included), or `BAD`.
fn quoted(value: &[u8]) -> Result<&[u8], Failure> {
    if value.len() >= 2 && value[0] == b'"' {
        Ok(value)
    } else {
        Err(BAD)
    }
}

/// A task status as JSON (`"claimed"`).
fn task_status(value: &[u8]) -> Option<TaskStatus> {
    use TaskStatus::*;
    let mut buf = [0u8; 12];
    let n = json::unescape(value, &mut buf)?;
    let name = buf.get(..n)?;
    [Pending, Claimed, Running, Completed, Failed, Cancelled]
        .into_iter()
        .find(|s| s.as_str().as_bytes() == name)
}

/// `POST /workers`'s answer: the new worker's id, a JSON string.
pub fn worker_id(answer: &[u8]) -> Result<&[u8], Failure> {
    quoted(member(answer, "id").ok_or(BAD)?)
}

/// A claimed task as `POST /tasks/claim` answers it: its strings as JSON
/// strings (quoted, escaped as the server sent them: room and job names
/// may hold `\\`), its payload as the exact JSON text sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claimed<'a> {
    /// Task UUID.
    pub id: &'a [u8],
    /// `{room}:{category}:{name}` of its job.
    pub job_name: &'a [u8],
    /// The room it was submitted in.
    pub room_id: &'a [u8],
    /// The client's payload, verbatim.
    pub payload: &'a [u8],
}

/// `POST /tasks/claim`'s answer: `{"task": null}` (`None`) or the task,
/// which must be `claimed`.
pub fn claimed(answer: &[u8]) -> Result<Option<Claimed<'_>>, Failure> {
    let task = member_span(answer, 0, b"task").ok_or(BAD)?;
    if &answer[task.clone()] == b"null" {
        return Ok(None);
    }
    let field = |key: &[u8]| {
        member_span(answer, task.start, key)
            .map(|r| &answer[r])
            .ok_or(BAD)
    };
    if task_status(field(b"status")?) != Some(TaskStatus::Claimed) {
        return Err(BAD);
    }
    Ok(Some(Claimed {
        id: quoted(field(b"id")?)?,
        job_name: quoted(field(b"job_name")?)?,
        room_id: quoted(field(b"room_id")?)?,
        payload: field(b"payload")?,
    }))
}

/// A task as `GET /tasks/{id}` and `PATCH /tasks/{id}` answer it: its
/// status, and the worker holding it as a JSON string (`None`: `null` or
/// absent, no worker).
pub fn task(answer: &[u8]) -> Result<(TaskStatus, Option<&[u8]>), Failure> {
    let status = member(answer, "status").and_then(task_status).ok_or(BAD)?;
    let worker = match member(answer, "worker_id") {
        None | Some(b"null") => None,
        Some(v) => Some(quoted(v)?),
    };
    Ok((status, worker))
}

/// A login answer's `access_token`, a JSON string, if the answer's
/// `token_type` (when it has one) is `bearer`. (Whether the token is one a
/// header may carry is [`super::is_valid_token`]'s to say, once unescaped.)
pub fn access_token(answer: &[u8]) -> Result<&[u8], Failure> {
    if member(answer, "token_type").is_some_and(|kind| !kind.eq_ignore_ascii_case(b"\"bearer\"")) {
        return Err(BAD);
    }
    quoted(member(answer, "access_token").ok_or(BAD)?)
}

/// The `detail` of a problem+json answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detail<'a> {
    /// A JSON string (quoted, escaped), as RFC 9457 has it.
    Text(&'a [u8]),
    /// Any other JSON value as sent (FastAPI's 422: a list of validation
    /// errors).
    Json(&'a [u8]),
}

/// The `detail` of a problem+json (or FastAPI error) answer, if the body
/// has one that is not `null`.
pub fn problem_detail(answer: &[u8]) -> Option<Detail<'_>> {
    match member(answer, "detail")? {
        b"null" => None,
        v if v[0] == b'"' => Some(Detail::Text(v)),
        v => Some(Detail::Json(v)),
    }
}

/// Is `full_name` (a claimed task's `job_name`) the job `room`,
/// `category`, `name`? The server writes `room:category:name`; room and
/// category hold no colon (the server refuses such a room), the name is
/// the rest, so a job whose room or category has one matches nothing.
pub fn job_matches(room: &str, category: &str, name: &str, full_name: &str) -> bool {
    let (room, category) = (room.as_bytes(), category.as_bytes());
    let rest = full_name
        .as_bytes()
        .strip_prefix(room)
        .and_then(|r| r.strip_prefix(b":"))
        .and_then(|r| r.strip_prefix(category))
        .and_then(|r| r.strip_prefix(b":"));
    rest == Some(name.as_bytes()) && !room.contains(&b':') && !category.contains(&b':')
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use std::vec::Vec;

    fn written(f: impl FnOnce(Out<'_>) -> Result<(), Full>) -> std::string::String {
        let mut v = Vec::new();
        f(&mut |b| {
            v.extend_from_slice(b);
            Ok(())
        })
        .unwrap();
        std::string::String::from_utf8(v).unwrap()
    }

    fn text(v: &[u8]) -> std::string::String {
        let mut out = std::vec![0; v.len()];
        let n = json::unescape(v, &mut out).unwrap();
        std::string::String::from_utf8(out[..n].to_vec()).unwrap()
    }

    #[test]
    fn request_bodies() {
        assert_eq!(
            written(|o| registration("modifiers", "E\"x", br#"{"type":"object"}"#, "w-1", o)),
            r#"{"category":"modifiers","name":"E\"x","schema":{"type":"object"},"worker_id":"w-1"}"#
        );
        assert_eq!(written(|o| claim("w-1", o)), r#"{"worker_id":"w-1"}"#);
        let failed = StatusUpdate {
            status: TaskStatus::Failed,
            error: Some("bad \"input\"\n"),
        };
        assert_eq!(
            written(|o| status(&failed, o)),
            r#"{"status":"failed","error":"bad \"input\"\n"}"#
        );
        let running = StatusUpdate {
            status: TaskStatus::Running,
            error: None,
        };
        assert_eq!(written(|o| status(&running, o)), r#"{"status":"running"}"#);
        // A sink that fills up stops the body there.
        let mut n = 0;
        let r = claim("w-1", &mut |b| {
            n += b.len();
            if n > 10 { Err(Full) } else { Ok(()) }
        });
        assert_eq!(r, Err(Full));
    }

    /// The bodies are what the serde types (the test server's reading of
    /// them) say, for any strings.
    #[test]
    fn bodies_agree_with_the_serde_types() {
        for s in ["", "w", "a\"b\\c", "\u{0}\u{1f}\u{7f}é😀", "line\nbreak\ttab"] {
            let update = StatusUpdate {
                status: TaskStatus::Failed,
                error: Some(s),
            };
            assert_eq!(
                written(|o| status(&update, o)),
                serde_json::to_string(&update).unwrap()
            );
            let claim_req = super::super::ClaimRequest { worker_id: s };
            assert_eq!(
                written(|o| claim(s, o)),
                serde_json::to_string(&claim_req).unwrap()
            );
            let reg = super::super::JobRegistration {
                category: s,
                name: s,
                schema: serde_json::json!({"a": [1]}),
                worker_id: Some(s),
            };
            assert_eq!(
                written(|o| registration(s, s, br#"{"a":[1]}"#, s, o)),
                serde_json::to_string(&reg).unwrap()
            );
        }
    }

    const CLAIM: &[u8] = br#"{"task":{"id":"ef81d82c-0cdb-4b06-a3d4-e4df27161b69","job_name":"@global:modifiers:E\"x","room_id":"r\\x","status":"claimed","created_at":"2026-11-23T23:02:16","worker_id":"w","error":null,"payload":{"a":[1,-0.0,"\u0000",123456789012345678901234567890],"s":"}\"]"},"queue_position":null}}"#;

    #[test]
    fn claims_keep_the_payload_verbatim() {
        let t = claimed(CLAIM).unwrap().unwrap();
        assert_eq!(text(t.id), "ef81d82c-0cdb-4b06-a3d4-e4df27161b69");
        assert_eq!(text(t.room_id), "r\\x");
        assert_eq!(text(t.job_name), "@global:modifiers:E\"x");
        assert_eq!(
            t.payload,
            br#"{"a":[1,-0.0,"\u0000",123456789012345678901234567890],"s":"}\"]"}"#
        );
        assert_eq!(claimed(br#"{"task":null}"#), Ok(None));
        assert_eq!(claimed(br#" { "task" : null , "x": 1 } "#), Ok(None));
        for bad in [
            &b""[..],
            b"{",
            b"null",
            br#"{"task":{"id":"x"}}"#,
            br#"{"task":{"id":1,"job_name":"a","room_id":"r","status":"claimed","payload":1}}"#,
            br#"{"task":{"id":"x","job_name":"a","room_id":"r","status":"running","payload":1}}"#,
            br#"{"task":{"id":"x","job_name":"a","room_id":"r","status":"claimed","payload":{"a":"#,
        ] {
            assert_eq!(claimed(bad), Err(BAD), "{:?}", core::str::from_utf8(bad));
        }
    }

    #[test]
    fn task_answers() {
        let body = br#"{"id":"t","status":"running","worker_id":"w\u002d1","error":null}"#;
        let (status, worker) = task(body).unwrap();
        assert_eq!(
            (status, worker.map(text).as_deref()),
            (TaskStatus::Running, Some("w-1"))
        );
        assert_eq!(
            task(br#"{"status":"failed","worker_id":null}"#),
            Ok((TaskStatus::Failed, None))
        );
        assert_eq!(task(br#"{"status":"pending"}"#), Ok((TaskStatus::Pending, None)));
        assert_eq!(task(br#"{"status":"done"}"#), Err(BAD));
        assert_eq!(task(br#"{"status":"failed","worker_id":7}"#), Err(BAD));
        assert_eq!(task(b"Internal Server Error"), Err(BAD));
    }

    #[test]
    fn worker_ids_and_tokens() {
        let w = br#"{"id":"20e2e4de-f22c-4885-8120-142dd3475d22","last_heartbeat":"2026-11-23T23:02:16"}"#;
        assert_eq!(
            text(worker_id(w).unwrap()),
            "20e2e4de-f22c-4885-8120-142dd3475d22"
        );
        assert_eq!(worker_id(br#"{"id":7}"#), Err(BAD));
        assert_eq!(worker_id(br#"{"ids":"x"}"#), Err(BAD));
        let login = br#"{"access_token":"a.b\/c","token_type":"bearer"}"#;
        assert_eq!(text(access_token(login).unwrap()), "a.b/c");
        assert_eq!(
            text(access_token(br#"{"access_token":"t","token_type":"Bearer"}"#).unwrap()),
            "t"
        );
        assert_eq!(text(access_token(br#"{"access_token":"t"}"#).unwrap()), "t");
        assert_eq!(
            access_token(br#"{"access_token":"t","token_type":"mac"}"#),
            Err(BAD)
        );
        assert_eq!(access_token(br#"{"access_token":null}"#), Err(BAD));
        assert_eq!(access_token(br#"{"detail":"LOGIN_BAD_CREDENTIALS"}"#), Err(BAD));
    }

    #[test]
    fn problem_details() {
        let p = br#"{"type":"/v1/problems/invalid-category","title":"Bad Request","status":400,"detail":"Category 'compute' not in allowed list"}"#;
        let Some(Detail::Text(d)) = problem_detail(p) else {
            panic!()
        };
        assert_eq!(text(d), "Category 'compute' not in allowed list");
        let Some(Detail::Text(d)) = problem_detail(br#"{"detail":"Worker \"x\" not found"}"#) else {
            panic!()
        };
        assert_eq!(text(d), "Worker \"x\" not found");
        assert_eq!(
            problem_detail(br#"{"detail":[{"type":"missing","loc":["body","username"]}]}"#),
            Some(Detail::Json(br#"[{"type":"missing","loc":["body","username"]}]"#))
        );
        assert_eq!(problem_detail(b"Internal Server Error"), None);
        assert_eq!(problem_detail(b"{}"), None);
        assert_eq!(problem_detail(br#"{"detail":null}"#), None);
    }

    #[test]
    fn jobs_match_only_their_own_full_name() {
        assert!(job_matches(
            "@global",
            "modifiers",
            "Echo",
            "@global:modifiers:Echo"
        ));
        assert!(!job_matches(
            "@global",
            "modifiers",
            "Echo",
            "@global:modifiers:Echo2"
        ));
        assert!(!job_matches(
            "@global",
            "modifiers",
            "Echo",
            "room:modifiers:Echo"
        ));
        assert!(job_matches("room", "analysis", "a:b", "room:analysis:a:b"));
        assert!(!job_matches("room", "analysis", "a:b", "room:analysis:a"));
        assert!(!job_matches("room", "analysis", "a:b", "room:analysisa:b"));
        assert!(!job_matches("room", "analysis", "a:b", "roo:analysis:a:b"));
        assert!(
            !job_matches("r:x", "analysis", "a:b", "r:x:analysis:a:b"),
            "a room with a colon never matches, as the server splits"
        );
    }
}
