//! Fuzz-style property tests for every reader of server answers the core
//! owns: `Retry-After`, `protocol::body`'s worker id, claim, task state,
//! token and problem detail, and `Request::read` over them (what both
//! runtimes read). Arbitrary
//! bytes and mutations of real answers: no panic, the work is bounded
//! (each case is one linear parse of at most a few KiB), whatever is read
//! lies inside the answer, and wherever serde_json reads an answer as the
//! protocol's serde types, the worker's readers read the same values.

/// The fuzz properties' shared knob and mutation (`outage_core::fuzz`,
/// behind the `fuzz` feature for the other crates), the same file.
#[path = "../src/fuzz.rs"]
mod fuzz;

use outage_core::call::Answer;
use outage_core::json::{string_is, unescape};
use outage_core::parse_retry_after;
use outage_core::protocol::body::{self, Detail};
use outage_core::protocol::{ClaimResponse, TaskInfo, TaskRecord};
use proptest::prelude::*;
use serde_json::value::RawValue;

const CLAIM: &[u8] = br#"{"task":{"id":"ef81d82c-0cdb-4b06-a3d4-e4df27161b69","job_name":"@global:modifiers:Echo","room_id":"r\\x","status":"claimed","created_at":"2026-11-23T23:02:16.334469","started_at":null,"completed_at":null,"worker_id":"20e2e4de-f22c-4885-8120-142dd3475d22","error":null,"payload":{"a":[1,2.5e-3,"\u00e9\n"],"b":{"c":null}},"queue_position":null}}"#;
const PROBLEM: &[u8] = br#"{"type":"/v1/problems/worker-not-found","title":"Not Found","status":404,"detail":"Worker 'x' not found"}"#;
const LOGIN: &[u8] = br#"{"access_token":"eyJhbGciOiJIUzI1NiJ9.e30.x","token_type":"bearer"}"#;
const WORKER: &[u8] =
    br#"{"id":"20e2e4de-f22c-4885-8120-142dd3475d22","last_heartbeat":"2026-11-23T23:02:16.334469"}"#;
const INFO: &[u8] = br#"{"id":"t","status":"running","worker_id":"20e2e4de-f22c-4885-8120-142dd3475d22","payload":{"x":"\"y\""}}"#;

/// The id whose tasks are "ours".
const ID: &str = "20e2e4de-f22c-4885-8120-142dd3475d22";

const REQUESTS: [outage_core::Request; 8] = {
    use outage_core::Request::*;
    use outage_core::protocol::TaskStatus::*;
    [
        CreateWorker,
        RegisterJob(0),
        Heartbeat,
        Claim,
        Update(Running),
        Update(Completed),
        GetTask,
        Disconnect,
    ]
};

/// A real answer with some bytes replaced, removed or inserted, or cut.
fn mutated(base: &'static [u8]) -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 0..8),
        any::<prop::sample::Index>(),
    )
        .prop_map(move |(edits, cut)| {
            let mut b = base.to_vec();
            for (at, byte, kind) in edits {
                if b.is_empty() {
                    break;
                }
                let i = at.index(b.len());
                match kind {
                    0 => b[i] = byte,
                    1 => {
                        b.remove(i);
                    }
                    2 => b.insert(i, byte),
                    _ => b.insert(i, b"{}[]\",:\\"[usize::from(byte) % 8]),
                }
            }
            let keep = cut.index(b.len() + 1);
            b.truncate(keep.max(b.len() / 2));
            b
        })
}

/// A JSON string read by the readers, unescaped (into as many bytes as
/// it has: unescaping never grows).
fn text(v: &[u8]) -> Option<String> {
    let mut out = vec![0; v.len()];
    let n = unescape(v, &mut out)?;
    out.truncate(n);
    String::from_utf8(out).ok()
}

/// `part` lies inside `whole`.
fn inside(part: &[u8], whole: &[u8]) -> bool {
    let at = (part.as_ptr() as usize).wrapping_sub(whole.as_ptr() as usize);
    at <= whole.len() && part.len() <= whole.len() - at
}

/// Every reader on `answer`: no panic, what is read lies inside it, and
/// where serde_json reads the answer, the readers agree with it.
fn parse_all(answer: &[u8]) -> Result<(), TestCaseError> {
    let _ = parse_retry_after(answer);
    if let Ok(id) = body::worker_id(answer) {
        prop_assert!(inside(id, answer));
        let _ = text(id);
    }
    if let Ok(token) = body::access_token(answer) {
        prop_assert!(inside(token, answer));
    }
    match body::problem_detail(answer) {
        Some(Detail::Text(d) | Detail::Json(d)) => prop_assert!(inside(d, answer)),
        None => {}
    }
    let read = body::claimed(answer);
    if let Ok(Some(t)) = read {
        for s in [t.id, t.job_name, t.room_id, t.payload] {
            prop_assert!(inside(s, answer));
        }
    }
    if let Ok(claim) = serde_json::from_slice::<ClaimResponse<TaskRecord<String, Box<RawValue>>>>(answer) {
        match claim.task {
            // serde reads a missing `task` as None too; the reader wants it.
            None if outage_core::json::member(answer, "task").is_none() => prop_assert!(read.is_err()),
            None => prop_assert_eq!(read, Ok(None)),
            Some(t) if t.status == outage_core::protocol::TaskStatus::Claimed => {
                let ours = read.expect("serde_json read it").expect("a task");
                prop_assert_eq!(text(ours.id), Some(t.id));
                prop_assert_eq!(text(ours.job_name), Some(t.job_name));
                prop_assert_eq!(text(ours.room_id), Some(t.room_id));
                prop_assert_eq!(ours.payload, t.payload.get().as_bytes());
            }
            Some(_) => prop_assert!(read.is_err(), "only a claimed task is taken"),
        }
    }
    let state = body::task(answer);
    if let Ok((_, Some(w))) = state {
        prop_assert!(inside(w, answer));
    }
    if let Ok(info) = serde_json::from_slice::<TaskInfo<String>>(answer) {
        let (status, worker) = state.expect("serde_json read it");
        prop_assert_eq!(status, info.status);
        prop_assert_eq!(worker.and_then(text), info.worker_id);
    }
    // Whose a task is: the holder compared as it is unescaped is the
    // holder unescaped, then compared.
    if let Ok((status, Some(w))) = state {
        let holder = text(w);
        for id in [ID, "", "x"] {
            prop_assert_eq!(
                string_is(w, id),
                holder.as_deref().map(|h| h == id),
                "{:?}",
                holder
            );
        }
        let got = outage_core::Request::GetTask.read(answer, ID);
        match holder {
            Some(h) => {
                let ours = h == ID;
                prop_assert_eq!(got, Ok(Answer::Task(outage_core::TaskState { status, ours })));
            }
            None => prop_assert_eq!(got, Err(outage_core::Failure::MalformedResponse)),
        }
    }
    // Every request's reading of an answer is the body readers'.
    for req in REQUESTS {
        let read = req.read(answer, ID);
        match req {
            outage_core::Request::CreateWorker => {
                prop_assert_eq!(read, body::worker_id(answer).map(Answer::Created))
            }
            outage_core::Request::Claim => prop_assert_eq!(read, body::claimed(answer).map(Answer::Claimed)),
            outage_core::Request::Update(new) => {
                let applied = matches!(state, Ok((now, _)) if now == new);
                prop_assert_eq!(read.is_ok(), applied);
            }
            outage_core::Request::GetTask => {
                let readable =
                    matches!(state, Ok((_, None))) || matches!(state, Ok((_, Some(w))) if text(w).is_some());
                prop_assert_eq!(read.is_ok(), readable);
            }
            _ => prop_assert_eq!(read, Ok(Answer::Done)),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: fuzz::cases(std::env::var("OUTAGE_FUZZ_CASES").ok().as_deref(), 2_000), ..Default::default() })]

    #[test]
    fn retry_after_never_panics_and_is_bounded(bytes in prop::collection::vec(any::<u8>(), 0..32)) {
        if let Some(d) = parse_retry_after(&bytes) {
            // At most nine digits: under 32 years, never an overflow.
            prop_assert!(d.as_millis() < 1_000_000_000 * 1_000);
            prop_assert!(bytes.trim_ascii().iter().all(u8::is_ascii_digit));
        }
    }

    #[test]
    fn retry_after_reads_every_delta_seconds_value(secs in 0u64..1_000_000_000) {
        let text = format!(" {secs}\t");
        prop_assert_eq!(parse_retry_after(text.as_bytes()).map(|d| d.as_millis()), Some(secs * 1_000));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        parse_all(&bytes)?;
    }

    #[test]
    fn mutated_claims_never_panic(body in mutated(CLAIM)) {
        parse_all(&body)?;
    }

    #[test]
    fn mutated_problems_tokens_and_task_states_never_panic(
        a in mutated(PROBLEM), b in mutated(INFO), c in mutated(LOGIN), d in mutated(WORKER)
    ) {
        for x in [a, b, c, d] {
            parse_all(&x)?;
        }
    }
}

#[test]
fn the_unmutated_answers_parse() {
    let t = body::claimed(CLAIM).unwrap().unwrap();
    assert_eq!(text(t.room_id).as_deref(), Some("r\\x"));
    assert_eq!(t.payload, br#"{"a":[1,2.5e-3,"\u00e9\n"],"b":{"c":null}}"#);
    let Some(Detail::Text(d)) = body::problem_detail(PROBLEM) else {
        panic!("no detail")
    };
    assert_eq!(text(d).as_deref(), Some("Worker 'x' not found"));
    let (status, worker) = body::task(INFO).unwrap();
    assert_eq!(status, outage_core::protocol::TaskStatus::Running);
    assert!(worker.is_some());
    assert_eq!(
        text(body::access_token(LOGIN).unwrap()).as_deref(),
        Some("eyJhbGciOiJIUzI1NiJ9.e30.x")
    );
    assert_eq!(
        text(body::worker_id(WORKER).unwrap()).as_deref(),
        Some("20e2e4de-f22c-4885-8120-142dd3475d22")
    );
    for answer in [CLAIM, PROBLEM, INFO, LOGIN, WORKER] {
        parse_all(answer).unwrap();
    }
}
