//! Fuzz-style properties of the core's HTTP/1.1 codec (`outage_core::wire`),
//! the one both runtimes frame their requests and read their answers with:
//! arbitrary bytes and mutated real answers, fed in arbitrary pieces, never
//! panic, never use a byte twice, and read the same however they arrive;
//! chunked encodings of any body decode to it. Bounded: `OUTAGE_FUZZ_CASES`
//! cases a property (`.ci/run` sets tens of thousands), each a linear read
//! of at most a few KiB.

/// The fuzz properties' shared knob and mutation (`outage_core::fuzz`,
/// behind the `fuzz` feature for the other crates), the same file.
#[path = "../src/fuzz.rs"]
mod fuzz;

use std::io::Write as _;

use outage_core::wire::{Error, Framing, Head, Limits, Read, Reader, RequestHead, Target, header_lines};
use proptest::prelude::*;

const LIMITS: Limits = Limits {
    head: 1024,
    body: 1024,
};

/// What a reader makes of `input` fed in pieces of `step` bytes (the
/// connection ends after it): the final head, the body, the bytes used.
fn read(input: &[u8], step: usize, limits: Limits) -> Result<(Head, Vec<u8>, usize), Error> {
    let mut r = Reader::new(limits);
    let (mut used, mut avail) = (0, step.clamp(1, input.len().max(1)).min(input.len()));
    let (mut head, mut body) = (None, Vec::new());
    loop {
        let fed = &input[used..avail];
        let (n, got) = r.feed(fed)?;
        assert!(n <= fed.len(), "used {n} of {}", fed.len());
        match got {
            Read::Head(h) => {
                assert!(head.is_none() && h.len <= n && (200..600).contains(&h.status));
                head = Some(h);
            }
            Read::Body(run) => {
                assert!(head.is_some() && run.end <= n && !run.is_empty());
                body.extend_from_slice(&fed[run]);
            }
            Read::Done => return Ok((head.expect("a head first"), body, used + n)),
            Read::More if avail == input.len() => {
                r.finish()?;
                return Ok((head.expect("a head first"), body, used + n));
            }
            Read::More => avail = (avail + step.max(1)).min(input.len()),
        }
        used += n;
        assert!(body.len() <= limits.body);
    }
}

fn chunk_encode(body: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = body;
    let mut sizes = sizes.iter().cycle();
    while !rest.is_empty() {
        let n = (*sizes.next().unwrap()).clamp(1, rest.len());
        write!(out, "{n:x}\r\n").unwrap();
        out.extend_from_slice(&rest[..n]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[n..];
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

const ANSWERS: [&[u8]; 4] = [
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 17\r\n\r\n{\"worker_id\":\"w\"}",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 503 Service Unavailable\r\nRetry-After: 3\r\nTransfer-Encoding: chunked\r\n\r\n5;x\r\nhello\r\n0\r\nT: 1\r\n\r\n",
    b"HTTP/1.0 404 Not Found\r\nConnection: close\r\n\r\n{\"detail\":\"Worker 'x' not found\"}",
    b"HTTP/1.1 204 No Content\r\nServer: uvicorn\r\n\r\n",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: fuzz::cases(std::env::var("OUTAGE_FUZZ_CASES").ok().as_deref(), 2_000), ..Default::default() })]

    /// Any bytes, in any pieces: an answer or an error, never a panic; the
    /// same whichever pieces they came in.
    #[test]
    fn any_bytes_read_the_same_in_any_pieces(
        bytes in prop::collection::vec(any::<u8>(), 0..2048),
        step in 1usize..300,
    ) {
        let whole = read(&bytes, bytes.len(), LIMITS);
        prop_assert_eq!(read(&bytes, step, LIMITS), whole);
    }

    /// Real answers mutated (bytes replaced, cut): the same in any pieces.
    #[test]
    fn mutated_answers_read_the_same_in_any_pieces(
        which in 0usize..4,
        edits in prop::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        cut in any::<usize>(),
        step in 1usize..64,
    ) {
        let mut bytes = ANSWERS[which].to_vec();
        let len = fuzz::mutate(&mut bytes, &edits, cut);
        let bytes = &bytes[..len];
        let whole = read(bytes, bytes.len(), LIMITS);
        prop_assert_eq!(read(bytes, step, LIMITS), whole);
    }

    /// Heads of header-like lines: parsed or refused; a final head always
    /// has a framing the reader can use, and its header lines are its own.
    #[test]
    fn header_like_heads_parse_or_fail(
        status in 0u16..1000,
        lines in prop::collection::vec("[A-Za-z-]{0,12}:[ -~]{0,20}", 0..12),
    ) {
        let mut bytes = format!("HTTP/1.1 {status:03} X\r\n").into_bytes();
        for l in &lines {
            bytes.extend_from_slice(l.as_bytes());
            bytes.extend_from_slice(b"\r\n");
        }
        bytes.extend_from_slice(b"\r\n");
        let mut r = Reader::new(LIMITS);
        if let Ok((used, Read::Head(h))) = r.feed(&bytes) {
            prop_assert!((200..600).contains(&status));
            prop_assert_eq!(h.status, status);
            prop_assert!(h.framing != Framing::Close || !h.reusable);
            prop_assert_eq!(header_lines(&bytes[used - h.len..used]).count(), lines.len());
        }
    }

    /// Chunked encodings of any body decode to it, in any pieces, leaving
    /// what follows.
    #[test]
    fn chunked_round_trip(
        body in prop::collection::vec(any::<u8>(), 0..1024),
        sizes in prop::collection::vec(1usize..300, 1..8),
        step in 1usize..600,
    ) {
        let mut input = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        input.extend_from_slice(&chunk_encode(&body, &sizes));
        let len = input.len();
        input.extend_from_slice(b"HTTP/1.1");
        let (head, out, used) = read(&input, step, LIMITS).unwrap();
        prop_assert_eq!(head.framing, Framing::Chunked);
        prop_assert_eq!(used, len);
        prop_assert_eq!(out, body);
    }

    /// A request head never carries a line its parts did not say: if it is
    /// valid, it has exactly its lines.
    #[test]
    fn valid_request_heads_have_their_lines(
        target in prop::collection::vec(any::<u8>(), 0..40),
        value in prop::collection::vec(any::<u8>(), 0..40),
        token in prop::collection::vec(any::<u8>(), 1..40),
        body_len in 0usize..5,
    ) {
        let headers: [(&[u8], &[u8]); 1] = [(b"X-Value", &value)];
        let head = RequestHead {
            method: "POST",
            target: Target::Raw(&target),
            host: b"h",
            bearer: Some(&token),
            headers: &headers,
            body_len,
        };
        let mut out = Vec::new();
        head.write(&mut |p: &[u8]| { out.extend_from_slice(p); Ok(()) }).unwrap();
        if head.is_valid() {
            let lines = out.split(|&b| b == b'\n').count();
            // request line, Host, Authorization, X-Value, Content-Length, the empty line, "".
            prop_assert_eq!(lines, 7);
            prop_assert!(out.ends_with(b"\r\n\r\n"));
        }
    }
}
