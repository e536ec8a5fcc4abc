//! What a device keeps of the wire: a claimed task's storage, and a
//! request's body (the core's [`Request::write_body`], the host's
//! encoding too) written into a lane's buffer.

use outage_core::call::Subject;
use outage_core::json::string;
use outage_core::protocol::body::Claimed;
use outage_core::wire::Cursor;
use outage_core::{Failure, Request};

use crate::types::{ErrorText, MAX_NAME};

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

/// An id the server sent (a JSON string), if it fits [`Id`].
pub(crate) fn id(value: &[u8]) -> Result<Id, Failure> {
    string(value).ok_or(BAD)
}

/// Keep a claimed task (and its payload, in `payload_buf`). Names are
/// unescaped (the server accepts rooms such as `r\\x`); the payload is
/// kept as the exact bytes the server sent. Names that do not fit are
/// [`Failure::MalformedResponse`]: an ambiguous claim for the core, never
/// a silent loss.
pub(crate) fn hold(task: Claimed<'_>, payload_buf: &mut [u8]) -> Result<Held, Failure> {
    let payload_len = payload_buf.get_mut(..task.payload.len()).map(|dst| {
        dst.copy_from_slice(task.payload);
        task.payload.len()
    });
    Ok(Held {
        id: id(task.id)?,
        job_name: string(task.job_name).ok_or(BAD)?,
        room_id: string(task.room_id).ok_or(BAD)?,
        payload_len,
        outcome: None,
    })
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

/// `req`'s body about `s` written into `tx`: its length, or `None` if it
/// does not fit.
pub(crate) fn body(tx: &mut [u8], req: Request, s: &Subject<'_>) -> Option<usize> {
    let mut c = Cursor::new(tx);
    req.write_body(s, &mut |piece| c.put(piece)).ok()?;
    Some(c.len())
}

#[cfg(test)]
pub(crate) mod tests {
    extern crate std;

    use super::*;

    #[test]
    fn bodies_fit_their_buffer_or_are_refused() {
        let mut tx = [0u8; 40];
        let s = Subject {
            worker_id: "w-1",
            ..Subject::default()
        };
        let n = body(&mut tx, Request::Claim, &s).unwrap();
        assert_eq!(&tx[..n], br#"{"worker_id":"w-1"}"#);
        assert_eq!(body(&mut tx[..10], Request::Claim, &s), None);
        assert_eq!(body(&mut tx, Request::Heartbeat, &s), Some(0));
    }

    /// A claim answer read by the core and kept.
    fn take_task(answer: &[u8], payload: &mut [u8]) -> Result<Option<Held>, Failure> {
        outage_core::protocol::body::claimed(answer)?
            .map(|t| hold(t, payload))
            .transpose()
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
