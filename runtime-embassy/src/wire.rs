//! What goes over the wire, written and read by hand into the caller's
//! buffers: request bodies (no `core::fmt` on the request path) and the
//! few answers the worker reads.

use outage_core::Failure;
use outage_core::protocol::{StatusUpdate, TaskStatus};

use crate::json::{self, field_span, member, string, task_span, write_string};
use crate::types::{ErrorText, Job, MAX_NAME};

/// A claimed task: its identity and payload length (the payload is in the
/// claim lane's buffer), and once run its outcome, kept through an outage.
pub(crate) struct Held {
    pub id: Id,
    pub job_name: heapless::String<JOB_CAP>,
    pub room_id: heapless::String<MAX_NAME>,
    pub payload_len: Option<usize>,
    pub outcome: Option<Result<(), ErrorText>>,
}

/// A worker id.
pub(crate) type Id = heapless::String<ID_CAP>;

const ID_CAP: usize = 40;
const JOB_CAP: usize = 3 * MAX_NAME + 2;

/// The JSON string at `span` of `body`, unescaped, if it fits `N` bytes.
fn json_string<const N: usize>(body: &[u8], span: core::ops::Range<usize>) -> Option<heapless::String<N>> {
    string(body.get(span)?)
}

/// A task status as JSON (`"claimed"`).
fn json_status(value: &[u8]) -> Option<TaskStatus> {
    use TaskStatus::*;
    let mut buf = [0u8; 12];
    let n = json::unescape(value, &mut buf)?;
    let name = buf.get(..n)?;
    [Pending, Claimed, Running, Completed, Failed, Cancelled]
        .into_iter()
        .find(|s| s.as_str().as_bytes() == name)
}

/// A task as `GET /tasks/{id}` and `PATCH /tasks/{id}` answer it: its
/// status, and the worker holding it (`null`: none).
pub(crate) fn task_info(body: &[u8]) -> Result<(TaskStatus, Option<Id>), Failure> {
    let bad = Failure::MalformedResponse;
    let status = member(body, "status").and_then(json_status).ok_or(bad)?;
    let worker = match member(body, "worker_id") {
        None | Some(b"null") => None,
        Some(v) => Some(string(v).ok_or(bad)?),
    };
    Ok((status, worker))
}

/// Parse a claim answer and keep the task (and its payload) in `held`.
/// Names are unescaped (the server accepts rooms such as `r\\x`); the
/// payload is kept as the exact bytes the server sent. An answer that
/// cannot be read is [`Failure::MalformedResponse`]: an ambiguous claim
/// for the core, never a silent loss.
pub(crate) fn take_task(body: &[u8], payload_buf: &mut [u8]) -> Result<Option<Held>, Failure> {
    let bad = Failure::MalformedResponse;
    let task = task_span(body).ok_or(bad)?;
    if &body[task.clone()] == b"null" {
        return Ok(None);
    }
    let field = |key: &[u8]| field_span(body, &task, key).ok_or(bad);
    let status = json_status(&body[field(b"status")?]).ok_or(bad)?;
    if status != TaskStatus::Claimed {
        return Err(bad);
    }
    let payload = &body[field(b"payload")?];
    let payload_len = payload_buf.get_mut(..payload.len()).map(|dst| {
        dst.copy_from_slice(payload);
        payload.len()
    });
    Ok(Some(Held {
        id: json_string(body, field(b"id")?).ok_or(bad)?,
        job_name: json_string(body, field(b"job_name")?).ok_or(bad)?,
        room_id: json_string(body, field(b"room_id")?).ok_or(bad)?,
        payload_len,
        outcome: None,
    }))
}

/// `s`, cut to [`ErrorText`]'s capacity at a character boundary.
pub(crate) fn error_text(s: &str) -> ErrorText {
    let mut end = s.len().min(128);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end)
        .and_then(|s| ErrorText::try_from(s).ok())
        .unwrap_or_default()
}

/// A request body being written into a buffer.
struct Body<'t> {
    buf: &'t mut [u8],
    len: usize,
}

impl Body<'_> {
    fn raw(&mut self, b: &[u8]) -> Option<()> {
        let dst = self.buf.get_mut(self.len..self.len + b.len())?;
        dst.copy_from_slice(b);
        self.len += b.len();
        Some(())
    }
    fn string(&mut self, s: &str) -> Option<()> {
        self.len += write_string(self.buf.get_mut(self.len..)?, s)?;
        Some(())
    }
}

/// `{"worker_id":…}` into `tx`.
pub(crate) fn claim_body(tx: &mut [u8], worker_id: &str) -> Option<usize> {
    let mut w = Body { buf: tx, len: 0 };
    w.raw(b"{\"worker_id\":")?;
    w.string(worker_id)?;
    w.raw(b"}")?;
    Some(w.len)
}

/// `{"status":…}` or `{"status":…,"error":…}` into `tx`.
pub(crate) fn status_body(tx: &mut [u8], update: &StatusUpdate<'_>) -> Option<usize> {
    let mut w = Body { buf: tx, len: 0 };
    w.raw(b"{\"status\":")?;
    w.string(update.status.as_str())?;
    if let Some(error) = update.error {
        w.raw(b",\"error\":")?;
        w.string(error)?;
    }
    w.raw(b"}")?;
    Some(w.len)
}

/// `{"category":…,"name":…,"schema":<raw>,"worker_id":…}` into `tx`.
pub(crate) fn registration_body(tx: &mut [u8], job: &Job<'_>, worker_id: &str) -> Option<usize> {
    let mut w = Body { buf: tx, len: 0 };
    w.raw(b"{\"category\":")?;
    w.string(job.category)?;
    w.raw(b",\"name\":")?;
    w.string(job.name)?;
    w.raw(b",\"schema\":")?;
    w.raw(job.schema.as_bytes())?;
    w.raw(b",\"worker_id\":")?;
    w.string(worker_id)?;
    w.raw(b"}")?;
    Some(w.len)
}

#[cfg(test)]
pub(crate) mod tests {
    extern crate std;

    use super::*;

    #[test]
    fn registration_bodies() {
        let mut tx = [0u8; 200];
        let job = Job {
            room: "@global",
            category: "modifiers",
            name: "E\"x",
            schema: r#"{"type":"object"}"#,
        };
        let n = registration_body(&mut tx, &job, "w-1").unwrap();
        assert_eq!(
            core::str::from_utf8(&tx[..n]).unwrap(),
            r#"{"category":"modifiers","name":"E\"x","schema":{"type":"object"},"worker_id":"w-1"}"#
        );
        let mut small = [0u8; 10];
        assert_eq!(registration_body(&mut small, &job, "w-1"), None);
    }

    #[test]
    fn claim_and_status_bodies() {
        let mut tx = [0u8; 80];
        let n = claim_body(&mut tx, "w-1").unwrap();
        assert_eq!(&tx[..n], br#"{"worker_id":"w-1"}"#);
        let update = StatusUpdate {
            status: TaskStatus::Failed,
            error: Some("bad \"input\""),
        };
        let n = status_body(&mut tx, &update).unwrap();
        assert_eq!(&tx[..n], br#"{"status":"failed","error":"bad \"input\""}"#);
        let update = StatusUpdate {
            status: TaskStatus::Running,
            error: None,
        };
        let n = status_body(&mut tx, &update).unwrap();
        assert_eq!(&tx[..n], br#"{"status":"running"}"#);
        assert_eq!(status_body(&mut tx[..10], &update), None);
    }

    #[test]
    fn task_answers() {
        let body = br#"{"id":"t","status":"running","worker_id":"w\u002d1","error":null}"#;
        let (status, worker) = task_info(body).unwrap();
        assert_eq!((status, worker.as_deref()), (TaskStatus::Running, Some("w-1")));
        let (_, worker) = task_info(br#"{"status":"failed","worker_id":null}"#).unwrap();
        assert_eq!(worker, None);
        assert_eq!(
            task_info(br#"{"status":"done"}"#),
            Err(Failure::MalformedResponse)
        );
        assert_eq!(
            task_info(br#"{"status":"failed","worker_id":7}"#),
            Err(Failure::MalformedResponse)
        );
    }

    #[test]
    fn jobs_match_full_names() {
        let job = Job {
            room: "@global",
            category: "modifiers",
            name: "Echo",
            schema: "{}",
        };
        assert!(job.matches("@global:modifiers:Echo"));
        assert!(!job.matches("@global:modifiers:Echo2"));
        assert!(!job.matches("room:modifiers:Echo"));
    }

    const CLAIM: &[u8] = br#"{"task":{"id":"ef81d82c-0cdb-4b06-a3d4-e4df27161b69","job_name":"@global:modifiers:E\"x","room_id":"r\\x","status":"claimed","created_at":"2026-11-23T23:02:16","worker_id":"w","error":null,"payload":{"a":[1,-0.0,"\u0000"],"s":"}\"]"},"queue_position":null}}"#;

    #[test]
    fn claims_keep_the_payload_and_unescape_names() {
        let mut payload = [0u8; 64];
        let held = take_task(CLAIM, &mut payload).unwrap().unwrap();
        assert_eq!(held.room_id, "r\\x");
        assert_eq!(held.job_name, "@global:modifiers:E\"x");
        let n = held.payload_len.unwrap();
        assert_eq!(&payload[..n], br#"{"a":[1,-0.0,"\u0000"],"s":"}\"]"}"#);
        assert!(take_task(br#"{"task":null}"#, &mut payload).unwrap().is_none());
        // A payload larger than its buffer is kept as "too large", not lost.
        let mut small = [0u8; 4];
        assert_eq!(take_task(CLAIM, &mut small).unwrap().unwrap().payload_len, None);
        // Unreadable answers are failures (an ambiguous claim for the core).
        for bad in [
            &b""[..],
            b"{",
            br#"{"task":{"id":"x"}}"#,
            br#"{"task":{"id":1,"job_name":"a","room_id":"r","status":"claimed","payload":1}}"#,
        ] {
            assert_eq!(
                take_task(bad, &mut payload).err(),
                Some(Failure::MalformedResponse)
            );
        }
    }

    /// The fuzz properties' settings: `OUTAGE_FUZZ_CASES` cases (2,000 by
    /// default; `.ci/run` sets more).
    pub(crate) fn fuzz_config() -> proptest::prelude::ProptestConfig {
        let cases = outage_core::fuzz::cases(std::env::var("OUTAGE_FUZZ_CASES").ok().as_deref(), 2_000);
        proptest::prelude::ProptestConfig {
            cases,
            ..Default::default()
        }
    }

    pub(crate) fn any_bytes(max: usize) -> impl proptest::strategy::Strategy<Value = std::vec::Vec<u8>> {
        proptest::collection::vec(proptest::prelude::any::<u8>(), 0..max)
    }

    pub(crate) fn any_edits(
        within: usize,
    ) -> impl proptest::strategy::Strategy<Value = std::vec::Vec<(usize, u8)>> {
        proptest::collection::vec((0..within, proptest::prelude::any::<u8>()), 0..6)
    }

    proptest::proptest! {
        #![proptest_config(fuzz_config())]

        /// Fuzz: arbitrary bytes and mutated claim answers never panic.
        #[test]
        fn claim_parsing_never_panics(
            (bytes, edits, cut) in (any_bytes(600), any_edits(400), 0usize..400)
        ) {
            let mut payload = [0u8; 128];
            let _ = take_task(&bytes, &mut payload);
            let mut body = CLAIM.to_vec();
            let len = outage_core::fuzz::mutate(&mut body, &edits, cut);
            let _ = take_task(&body[..len], &mut payload);
        }
    }

    #[test]
    fn jobs_match_only_their_own_full_name() {
        let job = Job {
            room: "room",
            category: "analysis",
            name: "a:b",
            schema: "{}",
        };
        assert!(job.matches("room:analysis:a:b"));
        assert!(!job.matches("room:analysis:a"));
        assert!(!job.matches("room:analysisa:b"));
        assert!(!job.matches("roo:analysis:a:b"));
        let colon = Job { room: "r:x", ..job };
        assert!(
            !colon.matches("r:x:analysis:a:b"),
            "a room with a colon never matches, as the server splits"
        );
    }

    #[test]
    fn error_texts_cut_at_a_character() {
        let long: std::string::String = "é".repeat(100);
        let t = error_text(&long);
        assert_eq!(t.len(), 128);
        let odd = std::format!("x{long}");
        assert_eq!(error_text(&odd).len(), 127);
    }

    #[test]
    fn error_texts_are_bounded() {
        let long = "x".repeat_str_for_test();
        assert_eq!(error_text(&long).len(), 128);
    }

    trait Repeat {
        fn repeat_str_for_test(&self) -> heapless::String<300>;
    }
    impl Repeat for &str {
        fn repeat_str_for_test(&self) -> heapless::String<300> {
            let mut s = heapless::String::new();
            for _ in 0..300 {
                let _ = s.push_str(self);
            }
            s
        }
    }
}
