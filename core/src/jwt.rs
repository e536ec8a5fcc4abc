//! A token's expiry, and when to renew it ahead of it: a healthy worker
//! logs in again *before* its JWT expires, so it never sees a 401 and never
//! hands a handler a token about to die.
//!
//! [`expires_at`] reads the `exp` claim of a JWT (RFC 7519) without
//! allocating: the payload segment is base64url-decoded into a stack
//! buffer and scanned for the claim. A token that is not a JWT (a static
//! bearer token) has none, and keeps the rule of a 401 renewing it.
//! [`renew_after`] is the rule: at 80 % of the token's remaining life, but
//! at least 2 s before it ends, and never before half of it.
//!
//! The runtime reads the wall clock (the claim is Unix time) and reports
//! the remaining life with the login's answer
//! ([`crate::Reply::Renewed`]); the lifecycle schedules the renewal on its
//! own clock. Depends only on [`crate::time`].

use crate::time::Duration;

/// The longest payload segment read (base64url characters); a longer
/// token is treated as having no expiry.
const MAX_SEGMENT: usize = 1368;

/// The `exp` claim (Unix seconds) of a JWT, if `token` is one and has it.
pub fn expires_at(token: &str) -> Option<u64> {
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || payload.len() > MAX_SEGMENT {
        return None;
    }
    let mut buf = [0u8; MAX_SEGMENT / 4 * 3 + 3];
    let n = decode_base64url(payload.as_bytes(), &mut buf)?;
    exp_claim(&buf[..n])
}

/// The shortest time between two renewals ahead of expiry; a token with
/// less life left is renewed on its 401 instead. (A JWT's `exp` is whole
/// seconds: two logins within one second can return the same expiry.)
pub const MIN_RENEWAL_GAP: Duration = Duration::from_secs(1);

/// When to renew a token with `valid_for` left: 80 % of it, at least 2 s
/// before its end, never before half of it.
pub const fn renew_after(valid_for: Duration) -> Duration {
    let life = valid_for.as_millis();
    let eighty = life / 5 * 4 + life % 5 * 4 / 5;
    let before_end = life.saturating_sub(2_000);
    let half = life / 2;
    let at = if eighty < before_end { eighty } else { before_end };
    Duration::from_millis(if at > half { at } else { half })
}

fn sextet(c: u8) -> Option<u32> {
    Some(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        b'_' => 63,
        _ => return None,
    } as u32)
}

/// base64url without padding (JWS's encoding) into `out`: the bytes written.
fn decode_base64url(input: &[u8], out: &mut [u8]) -> Option<usize> {
    let input = match input {
        [rest @ .., b'=', b'='] | [rest @ .., b'='] => rest,
        _ => input,
    };
    if input.len() % 4 == 1 {
        return None;
    }
    let mut n = 0;
    for chunk in input.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= sextet(c)? << (18 - 6 * i);
        }
        let bytes = [(acc >> 16) as u8, (acc >> 8) as u8, acc as u8];
        let take = chunk.len() - 1;
        out.get_mut(n..n + take)?.copy_from_slice(&bytes[..take]);
        n += take;
    }
    Some(n)
}

/// The integer value of the top-level `"exp"` key of a JSON object.
fn exp_claim(json: &[u8]) -> Option<u64> {
    let mut depth = 0u32;
    let mut i = 0;
    while i < json.len() {
        match json[i] {
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            b'"' => {
                let start = i + 1;
                i = start;
                while i < json.len() && json[i] != b'"' {
                    i += if json[i] == b'\\' { 2 } else { 1 };
                }
                let key = json.get(start..i)?;
                if depth == 1 && key == b"exp" {
                    let mut j = i + 1;
                    while json.get(j).is_some_and(|c| c.is_ascii_whitespace()) {
                        j += 1;
                    }
                    if json.get(j) == Some(&b':') {
                        j += 1;
                        while json.get(j).is_some_and(|c| c.is_ascii_whitespace()) {
                            j += 1;
                        }
                        return integer(&json[j..]);
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// The whole seconds of a JSON number (`1700000000`, `1700000000.5`).
fn integer(s: &[u8]) -> Option<u64> {
    let mut v: u64 = 0;
    let mut digits = 0;
    for &c in s {
        match c {
            b'0'..=b'9' => {
                v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
                digits += 1;
            }
            _ => break,
        }
    }
    (digits > 0).then_some(v)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::format;
    use std::string::String;

    /// A JWT with `payload` as its claims (the signature is not checked).
    fn jwt(payload: &str) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::from("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.");
        for chunk in payload.as_bytes().chunks(3) {
            let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
            let acc = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..=chunk.len() {
                out.push(A[(acc >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out.push_str(".c2lnbmF0dXJl");
        out
    }

    #[test]
    fn reads_the_exp_claim_of_a_zndraw_token() {
        // What fastapi-users issues: sub, aud, exp.
        let t = jwt(r#"{"sub":"6a1f…","aud":["fastapi-users:auth"],"exp":1796000000}"#);
        assert_eq!(expires_at(&t), Some(1_796_000_000));
        let t = jwt(r#"{ "exp" : 17.5, "sub": "x" }"#);
        assert_eq!(expires_at(&t), Some(17));
        for len in 0..6 {
            let pad = "x".repeat(len);
            let t = jwt(&format!(r#"{{"a":"{pad}","exp":42}}"#));
            assert_eq!(expires_at(&t), Some(42), "{t}");
        }
    }

    #[test]
    fn no_expiry_without_a_top_level_exp() {
        assert_eq!(expires_at("secret-static-token"), None);
        assert_eq!(expires_at("a.b"), None);
        assert_eq!(expires_at("a.b.c.d"), None);
        assert_eq!(expires_at("a.!!!.c"), None);
        assert_eq!(expires_at(&jwt(r#"{"sub":"x"}"#)), None);
        assert_eq!(expires_at(&jwt(r#"{"nested":{"exp":5}}"#)), None);
        assert_eq!(expires_at(&jwt(r#"{"sub":"\"exp\":5"}"#)), None);
        assert_eq!(expires_at(&jwt(r#"{"exp":"soon"}"#)), None);
        assert_eq!(expires_at(&jwt(r#"{"exp":99999999999999999999999}"#)), None);
        let long = "a".repeat(MAX_SEGMENT + 1);
        assert_eq!(expires_at(&format!("h.{long}.s")), None);
    }

    #[test]
    fn never_panics_on_any_input() {
        let mut seed = 0x1234_5678_u64;
        for len in 0..300 {
            let mut t: heapless::String<320> = heapless::String::new();
            for _ in 0..len {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let c = b"ab.c-_{}\":=9eExp "[(seed >> 33) as usize % 17];
                let _ = t.push(c as char);
            }
            let _ = expires_at(&t);
        }
    }

    #[test]
    fn the_renewal_rule() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        // An hour (ZnDraw's default): at 80 %.
        assert_eq!(renew_after(s(3600)), s(2880));
        // Short tokens: 2 s before the end, but never before half.
        assert_eq!(renew_after(s(10)), s(8));
        assert_eq!(renew_after(s(5)), s(3));
        assert_eq!(renew_after(s(4)), s(2));
        assert_eq!(renew_after(s(3)), ms(1_500));
        assert_eq!(renew_after(s(1)), ms(500));
        assert_eq!(renew_after(Duration::ZERO), Duration::ZERO);
        // No overflow at the extreme (u64::MAX is divisible by 5).
        assert_eq!(renew_after(Duration::MAX).as_millis(), u64::MAX / 5 * 4);
    }
}
