//! Just enough JSON scanning to find the raw `payload` of a claimed task
//! without a heap: serde-json-core parses the fixed fields, this finds the
//! byte range of the payload value so the handler gets it verbatim.

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

/// The byte range of `task.payload` in a claim response.
pub fn payload_span(body: &[u8]) -> Option<Range<usize>> {
    let task = member(body, 0, b"task")?;
    member(body, task.start, b"payload")
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn absent_or_broken() {
        assert_eq!(payload_span(br#"{"task":null}"#), None);
        assert_eq!(payload_span(br#"{"task":{"id":"x"}}"#), None);
        assert_eq!(payload_span(br#"{"task": {"payload": {"a": "#), None);
        assert_eq!(payload_span(b""), None);
        assert_eq!(payload_span(br#"{"other":{"payload":1}}"#), None);
    }
}
