extern crate std;

use super::super::chunked::Chunked;
use super::*;
use std::format;
use std::string::String;
use std::vec::Vec;

const LIMITS: Limits = Limits {
    head: 16 * 1024,
    body: 1 << 20,
};

fn head(bytes: &[u8]) -> Result<Option<Head>, Error> {
    let mut end = HeadEnd::new();
    let n = end.find(bytes).expect("a complete head");
    parse(&bytes[..n], false, false)
}

fn final_head(bytes: &[u8]) -> Head {
    head(bytes).expect("parses").expect("a final response")
}

/// The whole response in `input` read by a fresh reader fed `step` bytes
/// more at a time, as a connection delivers them: (head, body, bytes used)
/// or the error; `ended` says the connection ends after `input`.
pub(crate) fn read_all(
    input: &[u8],
    step: usize,
    limits: Limits,
    ended: bool,
) -> Result<(Head, Vec<u8>, usize), Error> {
    let mut r = Reader::new(limits);
    let (mut used, mut avail) = (0, step.min(input.len()));
    let mut head = None;
    let mut body = Vec::new();
    loop {
        let (n, read) = r.feed(&input[used..avail])?;
        let fed = &input[used..avail];
        match read {
            Read::Head(h) => head = Some(h),
            Read::Body(run) => body.extend_from_slice(&fed[run]),
            Read::Done => return Ok((head.expect("a head before the end"), body, used + n)),
            Read::More if avail == input.len() => {
                used += n;
                if !ended {
                    return Err(Error::Truncated);
                }
                r.finish()?;
                return Ok((head.expect("a head"), body, used));
            }
            Read::More => avail = (avail + step).min(input.len()),
        }
        used += n;
    }
}

fn decode(input: &[u8], limit: usize) -> Result<(Vec<u8>, usize, bool), Error> {
    let mut d = Chunked::new();
    let mut body = Vec::new();
    let mut count = 0;
    let mut used = 0;
    let limits = Limits {
        head: LIMITS.head,
        body: limit,
    };
    loop {
        let (n, run) = d.feed(&input[used..], &mut count, limits)?;
        if let Some(run) = run {
            body.extend_from_slice(&input[used..][run]);
        }
        used += n;
        if n == 0 || d.done() || used == input.len() {
            return Ok((body, used, d.done()));
        }
    }
}

#[test]
fn head_end_is_found_across_reads_with_crlf_or_lf() {
    let full = b"\r\n\nHTTP/1.1 200 OK\r\nA: b\r\n\r\nbody";
    let want = full.len() - 4;
    assert_eq!(HeadEnd::new().find(full), Some(want));
    for split in 0..full.len() {
        let mut end = HeadEnd::new();
        let first = end.find(&full[..split]);
        let found = first.or_else(|| end.find(full));
        assert_eq!(found, Some(want), "split at {split}");
    }
    assert_eq!(HeadEnd::new().find(b"HTTP/1.1 200 OK\nA: b\n\nrest"), Some(22));
    // Lines that end, but no empty line: not found.
    assert_eq!(HeadEnd::new().find(b"HTTP/1.1 200 OK\r\nA: b\r\n"), None);
    assert_eq!(HeadEnd::new().find(b"\r\n\r\n\n"), None);
}

#[test]
fn final_heads_give_their_framing_and_reuse() {
    let h = final_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nRetry-After: 7\r\n\r\n");
    assert_eq!((h.status, h.framing, h.reusable), (200, Framing::Length(5), true));
    assert_eq!(h.retry_after, Some(Duration::from_secs(7)));

    let h = final_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n");
    assert_eq!(h.framing, Framing::Length(5));
    let list = head(b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n");
    assert_eq!(
        list,
        Err(Error::Malformed),
        "a list of lengths is refused (RFC 9110 8.6 allows it)"
    );

    let h = final_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n");
    assert_eq!((h.framing, h.reusable), (Framing::Chunked, true));

    let h = final_head(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n");
    assert_eq!(h.framing, Framing::Close);
    assert!(!h.reusable, "a body to the connection's end ends the connection");

    let h = final_head(b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n");
    assert!(!h.reusable);

    let h = final_head(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert!(!h.reusable && !h.http11, "HTTP/1.0 is not kept alive");

    let h = final_head(b"HTTP/1.1 204 No Content\r\nContent-Length: 12\r\n\r\n");
    assert_eq!(h.framing, Framing::Empty);
    let h = final_head(b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!(h.framing, Framing::Empty);

    let bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n";
    let h = parse(bytes, true, false).unwrap().unwrap();
    assert_eq!(h.framing, Framing::Empty, "no body after HEAD");

    let h = final_head(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n");
    assert_eq!(h.framing, Framing::Length(usize::MAX));

    let h = final_head(b"HTTP/1.1 299\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(h.status, 299, "the reason phrase is optional, the number kept");
    // Retry-After: the last one; an HTTP-date is not read.
    let h = final_head(b"HTTP/1.1 503 X\r\nRetry-After: 1\r\nretry-after: 9\r\n\r\n");
    assert_eq!(h.retry_after, Some(Duration::from_secs(9)));
    let h = final_head(b"HTTP/1.1 503 X\r\nRetry-After: Wed, 21 Oct 2015 07:28:00 GMT\r\n\r\n");
    assert_eq!(h.retry_after, None);
}

#[test]
fn interim_heads_are_skipped_and_odd_heads_refused() {
    assert!(head(b"HTTP/1.1 100 Continue\r\n\r\n").unwrap().is_none());
    assert!(
        head(b"HTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n")
            .unwrap()
            .is_none()
    );
    let refused: &[&[u8]] = &[
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        b"HTTP/1.1 600 Nope\r\n\r\n",
        b"HTTP/1.1 099 Nope\r\n\r\n",
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1  200 OK\r\n\r\n",
        b"HTTP/2 200 OK\r\n\r\n",
        b"HTTP/1.2 200 OK\r\n\r\n",
        b"HTTP/1.1 200 O\x01K\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: \r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nNoColon\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n folded: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nA: b\rc\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nA: b\x00c\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\nBad Header: x\r\n\r\n",
        b"SSH-2.0-OpenSSH\r\n\r\n",
    ];
    for bytes in refused {
        let r = head(bytes);
        assert_eq!(r, Err(Error::Malformed), "{:?}", String::from_utf8_lossy(bytes));
    }
}

#[test]
fn too_many_headers_is_a_head_too_large() {
    let mut bytes = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..=MAX_HEADERS {
        bytes.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
    }
    bytes.extend_from_slice(b"\r\n");
    assert_eq!(head(&bytes), Err(Error::HeadTooLarge));
}

#[test]
fn header_lines_are_the_heads_own() {
    let bytes = b"\r\nHTTP/1.1 200 OK\r\nX-Name: caf\xc3\xa9 \r\nRetry-After:3\nContent-Length: 0\r\n\r\n";
    let h = final_head(bytes);
    let lines: Vec<_> = header_lines(&bytes[bytes.len() - h.len..]).collect();
    let want: [(&[u8], &[u8]); 3] = [
        (b"X-Name", b"caf\xc3\xa9"),
        (b"Retry-After", b"3"),
        (b"Content-Length", b"0"),
    ];
    assert_eq!(lines, want);
}

#[test]
fn chunked_bodies_decode() {
    let input = b"5\r\nhello\r\n7;ext=\"a b\"\r\n, world\r\n0\r\nTrailer: x\r\n\r\nNEXT";
    let (body, used, done) = decode(input, 100).unwrap();
    assert_eq!(body, b"hello, world");
    assert!(done);
    assert_eq!(&input[used..], b"NEXT", "bytes after the body are left");

    let (body, _, done) = decode(b"A\nabcdefghij\n0\n\n", 100).unwrap();
    assert_eq!((body.as_slice(), done), (&b"abcdefghij"[..], true), "bare LF");

    let (body, used, done) = decode(b"3\r\nab", 100).unwrap();
    assert_eq!((body.as_slice(), used, done), (&b"ab"[..], 5, false));

    // Exactly at the limit is fine; one more byte is not.
    assert!(decode(b"4\r\nabcd\r\n0\r\n\r\n", 4).unwrap().2);
    assert_eq!(decode(b"4\r\nabcd\r\n1\r\n", 4), Err(Error::BodyTooLarge));
    assert_eq!(decode(b"ffffffffffffffff\r\n", 1 << 20), Err(Error::BodyTooLarge));
}

#[test]
fn bad_chunked_bodies_are_errors() {
    let bad: &[&[u8]] = &[
        b"\r\n",
        b"g\r\n",
        b";x\r\n",
        b"5\rX\n",
        b"5\r\nhelloX\n",
        b"5\r\nhello\rX\n",
        b"00000000000000001\r\n",
    ];
    for input in bad {
        assert_eq!(
            decode(input, 100),
            Err(Error::Malformed),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
    let mut endless_ext = b"5;".to_vec();
    endless_ext.resize(1024 + 10, b'x');
    assert_eq!(decode(&endless_ext, 100), Err(Error::HeadTooLarge));
    let mut endless_trailer = b"0\r\nT: ".to_vec();
    endless_trailer.resize(LIMITS.head + 10, b'x');
    assert_eq!(decode(&endless_trailer, 100), Err(Error::HeadTooLarge));
}

#[test]
fn responses_read_the_same_however_they_arrive() {
    let cases: [(&[u8], u16, &[u8], bool); 6] = [
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            200,
            b"hello",
            true,
        ),
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}",
            201,
            b"{}",
            true,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1;x=y\r\n!\r\n0\r\n\r\n",
            200,
            b"hello!",
            true,
        ),
        (b"HTTP/1.1 200 OK\r\n\r\nto the end", 200, b"to the end", false),
        (b"HTTP/1.1 204 No Content\r\n\r\n", 204, b"", true),
        (
            b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n",
            404,
            b"",
            false,
        ),
    ];
    for (input, status, want, reusable) in cases {
        for step in 1..=input.len() {
            let (h, body, used) = read_all(input, step, LIMITS, true).unwrap();
            assert_eq!(
                (h.status, body.as_slice(), h.reusable),
                (status, want, reusable),
                "step {step}"
            );
            assert_eq!(used, input.len());
        }
    }
}

#[test]
fn the_end_of_the_connection_is_judged_where_it_comes() {
    let mut r = Reader::new(LIMITS);
    assert_eq!(r.finish(), Err(Error::Closed), "before any byte: closed");
    let mut r = Reader::new(LIMITS);
    assert_eq!(r.feed(b"HTTP/1.1 2").unwrap(), (0, Read::More));
    assert!(r.started());
    assert_eq!(r.finish(), Err(Error::Truncated), "inside the head: cut");
    let mut r = Reader::new(LIMITS);
    let input = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel";
    let (used, read) = r.feed(input).unwrap();
    assert!(matches!(read, Read::Head(_)));
    assert_eq!(r.feed(&input[used..]).unwrap(), (3, Read::Body(0..3)));
    assert!(!r.is_done());
    assert_eq!(r.finish(), Err(Error::Truncated), "inside the body: cut");
    assert_eq!(
        read_all(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
            7,
            LIMITS,
            true
        ),
        Err(Error::Truncated)
    );
}

#[test]
fn limits_hold_for_the_whole_head_and_the_body() {
    let small = Limits { head: 64, body: 8 };
    // One long line that never ends, interim heads that add up, a body
    // longer than said.
    let endless = [b'x'; 100];
    let mut r = Reader::new(small);
    assert_eq!(r.feed(&endless[..63]).unwrap(), (0, Read::More));
    assert_eq!(r.feed(&endless[..64]), Err(Error::HeadTooLarge));
    let interim = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(3);
    assert_eq!(Reader::new(small).feed(&interim), Err(Error::HeadTooLarge));
    assert_eq!(
        read_all(
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n123456789",
            100,
            small,
            true
        ),
        Err(Error::BodyTooLarge)
    );
    assert!(
        read_all(
            b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n12345678",
            100,
            small,
            true
        )
        .is_ok()
    );
    assert_eq!(
        read_all(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n123456789",
            3,
            small,
            true
        ),
        Err(Error::BodyTooLarge)
    );
    assert_eq!(
        read_all(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\n123456789\r\n0\r\n\r\n",
            5,
            small,
            true
        ),
        Err(Error::BodyTooLarge)
    );
}

#[test]
fn bytes_after_a_response_are_left_unused() {
    let input = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n";
    let (_, body, used) = read_all(input, input.len(), LIMITS, false).unwrap();
    assert_eq!(
        (body.as_slice(), &input[used..]),
        (&b"ok"[..], &b"HTTP/1.1 200 OK\r\n"[..])
    );
}

#[cfg(feature = "push")]
#[test]
fn an_upgrade_ends_at_its_101_and_leaves_the_new_protocol_unused() {
    let key = super::super::websocket::key(*b"the sample nonce");
    let input = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x020{";
    let mut r = Reader::new(LIMITS).for_upgrade();
    let (used, read) = r.feed(input).unwrap();
    let Read::Head(h) = read else { panic!("a head") };
    assert_eq!((h.status, h.framing, h.reusable), (101, Framing::Empty, false));
    assert_eq!(
        &input[used..],
        b"\x81\x020{",
        "the first frame is the WebSocket's"
    );
    assert!(r.is_done());
    let head = &input[used - h.len..used];
    assert_eq!(super::super::websocket::switched(h.status, head, &key), Ok(()));
    // A refused upgrade is an answer as any other; without `for_upgrade`
    // a 101 is refused.
    let refused = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 2\r\n\r\nno";
    let mut r = Reader::new(LIMITS).for_upgrade();
    let (_, read) = r.feed(refused).unwrap();
    assert!(matches!(
        read,
        Read::Head(Head {
            status: 400,
            framing: Framing::Length(2),
            ..
        })
    ));
    let mut r = Reader::new(LIMITS);
    assert_eq!(r.feed(input), Err(Error::Malformed));
    // Interim heads before the 101 are still skipped.
    let mut r = Reader::new(LIMITS).for_upgrade();
    let (_, read) = r
        .feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 101 Switching Protocols\r\n\r\n")
        .unwrap();
    assert!(matches!(read, Read::Head(Head { status: 101, .. })));
    // Over reads: the interim head is used as it is skipped, the partial
    // final head is not; the caller drops what was used and feeds the rest
    // with what comes next, at every split.
    let stream =
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81";
    let interim = b"HTTP/1.1 100 Continue\r\n\r\n".len();
    for split in 0..stream.len() - 1 {
        let mut r = Reader::new(LIMITS).for_upgrade();
        let (used, read) = r.feed(&stream[..split]).unwrap();
        assert_eq!(read, Read::More, "split at {split}");
        assert_eq!(
            used,
            if split >= interim { interim } else { 0 },
            "split at {split}"
        );
        let rest = &stream[used..];
        let (n, read) = r.feed(rest).unwrap();
        let Read::Head(h) = read else {
            panic!("the 101 at split {split}")
        };
        assert_eq!(h.status, 101);
        assert_eq!(&rest[n..], b"\x81", "split at {split}");
        assert_eq!(&rest[n - h.len..n], &stream[interim..stream.len() - 1]);
    }
}

#[test]
fn errors_are_the_cores_failures() {
    assert_eq!(
        Error::Closed.failure(),
        Failure::Transport(Transport::ConnectionClosed)
    );
    assert_eq!(
        Error::Truncated.failure(),
        Failure::Transport(Transport::Truncated)
    );
    assert_eq!(Error::Malformed.failure(), Failure::MalformedResponse);
    assert_eq!(Error::HeadTooLarge.failure(), Failure::ResponseTooLarge);
    assert_eq!(Error::BodyTooLarge.failure(), Failure::ResponseTooLarge);
}

#[test]
fn request_heads_are_read_by_the_same_rules() {
    assert_eq!(request_head(b"GET /metrics HTTP/1.1\r\nHost: h\r\n"), Ok(None));
    let buf = b"\r\nGET /metrics?x=1 HTTP/1.1\r\nHost: h\r\nAccept: text/plain\r\n\r\nrest";
    let (line, len) = request_head(buf).unwrap().unwrap();
    assert_eq!(
        (line.method, line.target, line.http11),
        (&b"GET"[..], &b"/metrics?x=1"[..], true)
    );
    assert_eq!(&buf[len..], b"rest");
    let headers: Vec<_> = header_lines(&buf[..len]).collect();
    assert_eq!(
        headers,
        [(&b"Host"[..], &b"h"[..]), (&b"Accept"[..], &b"text/plain"[..])]
    );
    assert!(!request_head(b"HEAD / HTTP/1.0\n\n").unwrap().unwrap().0.http11);
    for bad in [
        &b"GET /metrics\r\n\r\n"[..],
        b"GET  /metrics HTTP/1.1\r\n\r\n",
        b"GET /metrics HTTP/2\r\n\r\n",
        b"G T / HTTP/1.1\r\n\r\n",
        b"\x00\x01 nonsense\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
    ] {
        assert_eq!(
            request_head(bad),
            Err(Error::Malformed),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: y\r\n")).collect();
    assert_eq!(
        request_head(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()),
        Err(Error::HeadTooLarge)
    );
}
