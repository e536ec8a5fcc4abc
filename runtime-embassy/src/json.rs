//! Just enough JSON scanning to find the members of a claimed task without
//! a heap: this finds the byte range of each field, so the payload reaches
//! the handler verbatim and serde-json-core unescapes only the short name
//! fields (it would otherwise need an unescape buffer as large as the
//! longest escaped string anywhere in the payload).

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
fn member(b: &[u8], i: usize, key: &[u8]) -> Option<Range<usize>> {
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

/// The byte range of the `task` value of a claim response (`null` or an
/// object).
pub fn task_span(body: &[u8]) -> Option<Range<usize>> {
    member(body, 0, b"task")
}

/// The byte range of member `key` of the object at `object`.
pub fn field_span(body: &[u8], object: &Range<usize>, key: &[u8]) -> Option<Range<usize>> {
    member(body, object.start, key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload_span(body: &[u8]) -> Option<Range<usize>> {
        field_span(body, &task_span(body)?, b"payload")
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
    fn absent_or_broken() {
        assert_eq!(payload_span(br#"{"task":null}"#), None);
        assert_eq!(payload_span(br#"{"task":{"id":"x"}}"#), None);
        assert_eq!(payload_span(br#"{"task": {"payload": {"a": "#), None);
        assert_eq!(payload_span(b""), None);
        assert_eq!(payload_span(br#"{"other":{"payload":1}}"#), None);
    }
}
