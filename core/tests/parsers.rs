//! Fuzz-style property tests for every parser of server answers the core
//! owns or defines the types of: `Retry-After`, claim answers, task states
//! and problem details, through serde-json-core as a device parses them
//! (the host's serde_json parsers are covered in runtime-std). Arbitrary
//! bytes and mutations of real answers: no panic, and the work is bounded
//! (each case is one linear parse of at most a few KiB).

/// The fuzz properties' shared knob and mutation (`outage_core::fuzz`,
/// behind the `fuzz` feature for the other crates), the same file.
#[path = "../src/fuzz.rs"]
mod fuzz;

use outage_core::parse_retry_after;
use outage_core::protocol::{ClaimResponse, Problem, Task, TaskInfo};
use proptest::prelude::*;
use serde::de::IgnoredAny;

const CLAIM: &[u8] = br#"{"task":{"id":"ef81d82c-0cdb-4b06-a3d4-e4df27161b69","job_name":"@global:modifiers:Echo","room_id":"r\\x","status":"claimed","created_at":"2026-11-23T23:02:16.334469","started_at":null,"completed_at":null,"worker_id":"20e2e4de-f22c-4885-8120-142dd3475d22","error":null,"payload":{"a":[1,2.5e-3,"\u00e9\n"],"b":{"c":null}},"queue_position":null}}"#;
const PROBLEM: &[u8] = br#"{"type":"/v1/problems/worker-not-found","title":"Not Found","status":404,"detail":"Worker 'x' not found"}"#;
const INFO: &[u8] = br#"{"id":"t","status":"running","worker_id":"20e2e4de-f22c-4885-8120-142dd3475d22","payload":{"x":"\"y\""}}"#;

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

fn parse_all(body: &[u8]) {
    let mut scratch = [0u8; 64];
    let _ = serde_json_core::from_slice_escaped::<ClaimResponse<Task<heapless::String<64>, IgnoredAny>>>(
        body,
        &mut scratch,
    );
    let _ = serde_json_core::from_slice::<ClaimResponse<Task<heapless::String<64>, IgnoredAny>>>(body);
    let _ = serde_json_core::from_slice::<Problem<'_>>(body);
    let _ = serde_json_core::from_slice::<TaskInfo<heapless::String<40>>>(body);
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
        parse_all(&bytes);
    }

    #[test]
    fn mutated_claims_never_panic(body in mutated(CLAIM)) {
        parse_all(&body);
    }

    #[test]
    fn mutated_problems_and_task_states_never_panic(a in mutated(PROBLEM), b in mutated(INFO)) {
        parse_all(&a);
        parse_all(&b);
    }
}

#[test]
fn the_unmutated_answers_parse() {
    let mut scratch = [0u8; 64];
    let (claim, _): (ClaimResponse<Task<heapless::String<64>, IgnoredAny>>, _) =
        serde_json_core::from_slice_escaped(CLAIM, &mut scratch).unwrap();
    assert_eq!(claim.task.unwrap().room_id, "r\\x");
    let (p, _): (Problem<'_>, _) = serde_json_core::from_slice(PROBLEM).unwrap();
    assert_eq!(p.status, 404);
    let (i, _): (TaskInfo<heapless::String<40>>, _) = serde_json_core::from_slice(INFO).unwrap();
    assert!(i.worker_id.is_some());
}
