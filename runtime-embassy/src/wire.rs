//! What a device keeps of the wire: a claimed task's storage, and the
//! bodies and answers of the core's [`outage_core::protocol::body`] (the
//! one encoding and reading of them, the host's too) written into and read
//! out of the lanes' buffers.

use outage_core::Failure;
use outage_core::json::string;
use outage_core::protocol::body::{self, Out};
use outage_core::protocol::{StatusUpdate, TaskStatus};
use outage_core::wire::Cursor;

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

const BAD: Failure = Failure::MalformedResponse;

/// `POST /workers`'s answer: the new worker's id, if it fits [`Id`].
pub(crate) fn worker_id(answer: &[u8]) -> Result<Id, Failure> {
    string(body::worker_id(answer)?).ok_or(BAD)
}

/// A task as `GET /tasks/{id}` and `PATCH /tasks/{id}` answer it: its
/// status, and the worker holding it (`null`: none).
pub(crate) fn task_info(answer: &[u8]) -> Result<(TaskStatus, Option<Id>), Failure> {
    let (status, worker) = body::task(answer)?;
    let worker = match worker {
        None => None,
        Some(w) => Some(string(w).ok_or(BAD)?),
    };
    Ok((status, worker))
}

/// Parse a claim answer and keep the task (and its payload) in `held`.
/// Names are unescaped (the server accepts rooms such as `r\\x`); the
/// payload is kept as the exact bytes the server sent. An answer that
/// cannot be read, or names that do not fit, are
/// [`Failure::MalformedResponse`]: an ambiguous claim for the core, never
/// a silent loss.
pub(crate) fn take_task(answer: &[u8], payload_buf: &mut [u8]) -> Result<Option<Held>, Failure> {
    let Some(task) = body::claimed(answer)? else {
        return Ok(None);
    };
    let payload_len = payload_buf.get_mut(..task.payload.len()).map(|dst| {
        dst.copy_from_slice(task.payload);
        task.payload.len()
    });
    Ok(Some(Held {
        id: string(task.id).ok_or(BAD)?,
        job_name: string(task.job_name).ok_or(BAD)?,
        room_id: string(task.room_id).ok_or(BAD)?,
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

/// A body written by `write` into `tx`: its length, or `None` if it does
/// not fit.
/// (Not generic: one copy of the code for the three bodies.)
fn into(tx: &mut [u8], write: &dyn Fn(Out<'_>) -> Result<(), outage_core::json::Full>) -> Option<usize> {
    let mut c = Cursor::new(tx);
    write(&mut |piece| c.put(piece)).ok()?;
    Some(c.len())
}

/// `{"worker_id":…}` into `tx`.
pub(crate) fn claim_body(tx: &mut [u8], worker_id: &str) -> Option<usize> {
    into(tx, &|out| body::claim(worker_id, out))
}

/// `{"status":…}` or `{"status":…,"error":…}` into `tx`.
pub(crate) fn status_body(tx: &mut [u8], update: &StatusUpdate<'_>) -> Option<usize> {
    into(tx, &|out| body::status(update, out))
}

/// `{"category":…,"name":…,"schema":<raw>,"worker_id":…}` into `tx`.
pub(crate) fn registration_body(tx: &mut [u8], job: &Job<'_>, worker_id: &str) -> Option<usize> {
    into(tx, &|out| {
        body::registration(job.category, job.name, job.schema.as_bytes(), worker_id, out)
    })
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
