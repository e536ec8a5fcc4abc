//! Support for the fuzz properties of every crate's answer parsers (the
//! host's, the device's, the core's), so they share one knob and one way of
//! mutating a valid answer.

/// Cases per fuzz property: `var` (the value of `OUTAGE_FUZZ_CASES`, which
/// `.ci/run`'s fuzz step sets to tens of thousands) if it is a number, else
/// `default`.
pub fn cases(var: Option<&str>, default: u32) -> u32 {
    var.and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

/// A valid answer made invalid: each `(at, byte)` of `edits` replaces the
/// byte at `at` (modulo the length), then the answer is cut to `cut` bytes
/// (at least half of it is kept). Returns the new length.
pub fn mutate(body: &mut [u8], edits: &[(usize, u8)], cut: usize) -> usize {
    if body.is_empty() {
        return 0;
    }
    for &(at, b) in edits {
        let i = at % body.len();
        body[i] = b;
    }
    cut.max(body.len() / 2).min(body.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_and_mutations() {
        assert_eq!(cases(None, 7), 7);
        assert_eq!(cases(Some("50000"), 7), 50_000);
        assert_eq!(cases(Some("many"), 7), 7);
        let mut body = *b"abcdef";
        assert_eq!(mutate(&mut body, &[(1, b'X'), (8, b'Y')], 0), 3);
        assert_eq!(&body, b"aXYdef");
        assert_eq!(mutate(&mut body, &[], 99), 6);
        assert_eq!(mutate(&mut [], &[(1, 0)], 5), 0);
    }
}
