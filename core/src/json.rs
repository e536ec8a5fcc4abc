//! Just enough JSON for a worker, without a heap and without serde: find
//! a member's value by its byte range (so a claimed task's payload reaches
//! the handler verbatim), unescape a string into a caller's buffer, read a
//! non-negative integer, and write an escaped string through a sink. Both
//! runtimes read and write the server's bodies with it
//! ([`crate::protocol::body`]); a handler may use it too, for a small
//! payload:
//!
//! ```
//! use outage_core::json;
//! let payload = br#"{"times": 3, "note": "a\"b"}"#;
//! assert_eq!(json::member(payload, "times").and_then(json::uint), Some(3));
//! let note: heapless::String<8> = json::member(payload, "note").and_then(json::string).unwrap();
//! assert_eq!(note, "a\"b");
//! ```
//!
//! What it reads is the members of one object, not a validated document:
//! a value is skipped by its brackets and quotes, so a body with a broken
//! member elsewhere still yields the members it has, and a member missing
//! or cut short is `None`. Where a reader must know the whole value is
//! JSON (the host's typed payloads), it checks that itself.
//!
//! Why not serde-json-core (the device used it before): on the nRF52840
//! example it cost about 5 KB of flash for the few fixed shapes a worker
//! reads and writes.

use core::ops::Range;

/// Skips whitespace from `i`.
fn ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// The end (exclusive) of the string starting at `i` (a `"`).
fn string_end(b: &[u8], mut i: usize) -> Option<usize> {
    i += 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// The end (exclusive) of the JSON value starting at `i`.
fn value_end(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => string_end(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = string_end(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                j += 1;
            }
            (j > i).then_some(j)
        }
    }
}

/// In the object starting at `i`, the value range of member `key`.
fn find(b: &[u8], i: usize, key: &[u8]) -> Option<Range<usize>> {
    let mut j = ws(b, i);
    if b.get(j) != Some(&b'{') {
        return None;
    }
    j += 1;
    loop {
        j = ws(b, j);
        if b.get(j) == Some(&b'}') {
            return None;
        }
        let key_end = string_end(b, j)?;
        let name = &b[j + 1..key_end - 1];
        j = ws(b, key_end);
        if b.get(j) != Some(&b':') {
            return None;
        }
        let start = ws(b, j + 1);
        let end = value_end(b, start)?;
        if name == key {
            return Some(start..end);
        }
        j = ws(b, end);
        match b.get(j) {
            Some(b',') => j += 1,
            _ => return None,
        }
    }
}

/// The byte range of member `key` of the object starting at `at` (after
/// any whitespace) in `json`.
pub fn member_span(json: &[u8], at: usize, key: &[u8]) -> Option<Range<usize>> {
    find(json, at, key)
}

/// The value of member `key` of the JSON object `json`, as raw JSON text
/// (`None` if `json` is not an object or has no such member).
pub fn member<'j>(json: &'j [u8], key: &str) -> Option<&'j [u8]> {
    json.get(find(json, 0, key.as_bytes())?)
}

/// A JSON non-negative integer (`0`, `42`; no sign, fraction or exponent)
/// that fits a `u64`.
pub fn uint(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 20 {
        return None;
    }
    value.iter().try_fold(0u64, |n, &d| {
        if !d.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// A JSON string (with its quotes), unescaped, if it fits `N` bytes.
pub fn string<const N: usize>(value: &[u8]) -> Option<heapless::String<N>> {
    let mut out = heapless::Vec::<u8, N>::new();
    out.resize_default(N).ok()?;
    let n = unescape(value, &mut out)?;
    out.truncate(n);
    heapless::String::from_utf8(out).ok()
}

/// The unescaped text of the JSON string `value` (with its quotes), one
/// character's bytes at a time: `None` at the end, `Some(None)` on
/// anything that is not a valid string's content.
struct Unescaped<'j> {
    inner: &'j [u8],
    i: usize,
}

impl<'j> Unescaped<'j> {
    fn new(value: &'j [u8]) -> Option<Self> {
        let inner = value.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
        Some(Unescaped { inner, i: 0 })
    }

    /// The next character's UTF-8 bytes in `buf`, and their count (a raw
    /// byte is passed on as it is: the input's UTF-8 stays as sent).
    fn next(&mut self, buf: &mut [u8; 4]) -> Option<Option<usize>> {
        let inner = self.inner;
        let b = *inner.get(self.i)?;
        self.i += 1;
        Some(self.step(b, buf))
    }

    fn step(&mut self, b: u8, buf: &mut [u8; 4]) -> Option<usize> {
        let inner = self.inner;
        if b != b'\\' {
            if b < 0x20 || b == b'"' {
                return None;
            }
            buf[0] = b;
            return Some(1);
        }
        let e = *inner.get(self.i)?;
        self.i += 1;
        let c = match e {
            b'"' | b'\\' | b'/' => char::from(e),
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let i = self.i;
                let hi = hex4(inner.get(i..i + 4)?)?;
                self.i += 4;
                let code = if (0xD800..0xDC00).contains(&hi) {
                    let i = self.i;
                    if inner.get(i..i + 2)? != b"\\u" {
                        return None;
                    }
                    let lo = hex4(inner.get(i + 2..i + 6)?)?;
                    self.i += 6;
                    if !(0xDC00..0xE000).contains(&lo) {
                        return None;
                    }
                    0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                } else {
                    hi
                };
                char::from_u32(code)?
            }
            _ => return None,
        };
        Some(c.encode_utf8(buf).len())
    }
}

/// Unescapes the JSON string `value` (with its quotes) into `out`; the
/// length, or `None` if it is not a string or does not fit. The text never
/// grows: `value.len()` bytes always suffice. (Not generic: one copy of the
/// code for every buffer size.)
pub fn unescape(value: &[u8], out: &mut [u8]) -> Option<usize> {
    let mut chars = Unescaped::new(value)?;
    let mut buf = [0u8; 4];
    let mut n = 0;
    while let Some(len) = chars.next(&mut buf) {
        let len = len?;
        out.get_mut(n..n + len)?.copy_from_slice(&buf[..len]);
        n += len;
    }
    Some(n)
}

/// Is the JSON string `value` (with its quotes), unescaped, `s`? Compared
/// as it is read, without a buffer (so an id the server escaped matches
/// the id it stands for, of any length); `None` if `value` is not a valid
/// string: bad escapes or raw control bytes, as [`unescape`] refuses
/// them, or not UTF-8 (which [`unescape`] passes on unchecked).
pub fn string_is(value: &[u8], s: &str) -> Option<bool> {
    // Escapes are ASCII: the text is UTF-8 if its raw bytes are.
    core::str::from_utf8(value).ok()?;
    let mut chars = Unescaped::new(value)?;
    let mut rest = Some(s.as_bytes());
    let mut buf = [0u8; 4];
    while let Some(len) = chars.next(&mut buf) {
        let len = len?;
        rest = rest.and_then(|r| r.strip_prefix(&buf[..len]));
    }
    Some(rest.is_some_and(<[u8]>::is_empty))
}

fn hex4(digits: &[u8]) -> Option<u32> {
    digits
        .iter()
        .try_fold(0u32, |n, &d| Some(n * 16 + (d as char).to_digit(16)?))
}

/// A sink of pieces of bytes has no room for the next one (the pieces
/// written so far stand; the caller decides what that means).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// Writes `s` as a JSON string (quoted; `"`, `\\` and control characters
/// escaped, as Python's and serde_json's encoders do) through `out`, runs
/// of plain bytes in one piece each.
pub fn write_string(s: &str, out: &mut dyn FnMut(&[u8]) -> Result<(), Full>) -> Result<(), Full> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out(b"\"")?;
    let s = s.as_bytes();
    let mut run = 0;
    for (i, &b) in s.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => b"",
            _ => continue,
        };
        if run < i {
            out(&s[run..i])?;
        }
        if short.is_empty() {
            out(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 15)],
            ])?;
        } else {
            out(short)?;
        }
        run = i + 1;
    }
    if run < s.len() {
        out(&s[run..])?;
    }
    out(b"\"")
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    fn task_span(body: &[u8]) -> Option<Range<usize>> {
        member_span(body, 0, b"task")
    }

    fn field_span(body: &[u8], object: &Range<usize>, key: &[u8]) -> Option<Range<usize>> {
        member_span(body, object.start, key)
    }

    fn payload_span(body: &[u8]) -> Option<Range<usize>> {
        field_span(body, &task_span(body)?, b"payload")
    }

    /// `s` written by [`write_string`] into at most `room` bytes.
    fn written(s: &str, room: usize) -> Result<Vec<u8>, Full> {
        let mut out = Vec::new();
        write_string(s, &mut |b| {
            if out.len() + b.len() > room {
                return Err(Full);
            }
            out.extend_from_slice(b);
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn finds_the_payload() {
        let body = br#"{"task":{"id":"x","payload":{"a":[1,{"b":"}\""}],"c":2},"queue_position":null}}"#;
        let r = payload_span(body).unwrap();
        assert_eq!(&body[r], br#"{"a":[1,{"b":"}\""}],"c":2}"#);
        let body = br#"{ "task" : { "payload" : 42 , "id":"y"} }"#;
        assert_eq!(&body[payload_span(body).unwrap()], b"42");
        let body = br#"{"task":{"payload":"text, with comma"}}"#;
        assert_eq!(&body[payload_span(body).unwrap()], br#""text, with comma""#);
    }

    #[test]
    fn finds_fields_with_escapes() {
        let body = br#"{"task":{"id":"a\"b","room_id":"r\\x","payload":"\u0000","status":"claimed"}}"#;
        let task = task_span(body).unwrap();
        assert_eq!(&body[field_span(body, &task, b"id").unwrap()], br#""a\"b""#);
        assert_eq!(&body[field_span(body, &task, b"room_id").unwrap()], br#""r\\x""#);
        assert_eq!(
            &body[field_span(body, &task, b"status").unwrap()],
            br#""claimed""#
        );
        let none = br#"{"task":null}"#;
        assert_eq!(&none[task_span(none).unwrap()], b"null");
    }

    #[test]
    fn strings_unescape_and_escape() {
        let s: heapless::String<32> = string(br#""a\"b\\c\/\n\u00e9\ud83d\ude00""#).unwrap();
        assert_eq!(s, "a\"b\\c/\né😀");
        assert_eq!(string::<4>(br#""abcde""#), None, "too long");
        for bad in [
            &br#""\ud83d""#[..],
            br#""\x""#,
            br#""\u12""#,
            b"\"\x01\"",
            b"abc",
            br#"""#,
        ] {
            assert_eq!(string::<32>(bad), None, "{:?}", core::str::from_utf8(bad));
        }
        let out = written("a\"b\\c\n\u{1}é\t\u{8}\u{c}\r\u{1f}", 64).unwrap();
        assert_eq!(
            core::str::from_utf8(&out),
            Ok(r#""a\"b\\c\n\u0001é\t\b\f\r\u001f""#)
        );
        let back: heapless::String<32> = string(&out).unwrap();
        assert_eq!(back, "a\"b\\c\n\u{1}é\t\u{8}\u{c}\r\u{1f}");
        assert_eq!(string_is(br#""a\"b\u00e9\ud83d\ude00""#, "a\"bé😀"), Some(true));
        assert_eq!(
            string_is(br#""w\u002d1""#, "w-1"),
            Some(true),
            "an escaped id is the id"
        );
        assert_eq!(string_is(br#""""#, ""), Some(true));
        for (value, s) in [
            (&br#""w-1""#[..], "w-12"),
            (br#""w-12""#, "w-1"),
            (br#""w-2""#, "w-1"),
            (br#""\\x""#, "\\\\x"),
        ] {
            assert_eq!(
                string_is(value, s),
                Some(false),
                "{:?} is not {s:?}",
                core::str::from_utf8(value)
            );
        }
        // Not a string: refused, however it would compare.
        for value in [
            &b"w-1"[..],
            br#""w-1"#,
            br#""w\x1""#,
            br#""w-1\ud800""#,
            b"\"w-1\xff\"",
        ] {
            assert_eq!(string_is(value, "w-1"), None, "{value:?}");
            assert_eq!(string_is(value, "x"), None, "{value:?}");
        }
        assert_eq!(written("", 2).unwrap(), b"\"\"");
        assert_eq!(written("ab", 3), Err(Full));
    }

    #[test]
    fn members_and_numbers() {
        let p = br#"{"times": 3, "big": 18446744073709551616, "neg": -1, "s": "x"}"#;
        assert_eq!(member(p, "times").and_then(uint), Some(3));
        assert_eq!(member(p, "big").and_then(uint), None);
        assert_eq!(member(p, "neg").and_then(uint), None);
        assert_eq!(member(p, "s"), Some(&br#""x""#[..]));
        assert_eq!(member(p, "none"), None);
        assert_eq!(member(b"[1]", "times"), None);
    }

    proptest::proptest! {
        /// Whatever a string holds, writing then unescaping gives it back,
        /// in no more bytes than were written, and serde_json reads the
        /// written text as the same string (the encoders agree).
        #[test]
        fn strings_round_trip(s in "\\PC*|[\\x00-\\x7f]*") {
            let out = written(&s, usize::MAX).unwrap();
            let mut back = std::vec![0u8; out.len()];
            let n = unescape(&out, &mut back).unwrap();
            proptest::prop_assert_eq!(&back[..n], s.as_bytes());
            let serde: std::string::String = serde_json::from_slice(&out).unwrap();
            proptest::prop_assert_eq!(&serde, &s);
            proptest::prop_assert_eq!(serde_json::to_vec(&s).unwrap(), out);
        }
    }

    #[test]
    fn absent_or_broken() {
        assert_eq!(payload_span(br#"{"task":null}"#), None);
        assert_eq!(payload_span(br#"{"task":{"id":"x"}}"#), None);
        assert_eq!(payload_span(br#"{"task": {"payload": {"a": "#), None);
        assert_eq!(payload_span(b""), None);
        assert_eq!(payload_span(br#"{"other":{"payload":1}}"#), None);
    }
}
