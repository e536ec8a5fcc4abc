//! The client's side of the WebSocket opening handshake (RFC 6455 §4.1),
//! sans-IO, so that the push connection's upgrade is framed by this codec
//! like every other exchange: the request is a [`super::RequestHead`]
//! with [`headers`], the answer is read by a [`super::Reader`] made
//! [`for_upgrade`](super::Reader::for_upgrade), and [`switched`] checks
//! that its head accepts this key. What follows the head is the
//! WebSocket's.
//!
//! ```
//! use outage_core::wire::websocket;
//!
//! // RFC 6455 §1.3's example.
//! let key = websocket::key(*b"the sample nonce");
//! assert_eq!(&key, b"dGhlIHNhbXBsZSBub25jZQ==");
//! assert_eq!(&websocket::accept(&key), b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
//! ```

use super::response::{Error, header_lines, item};

/// The `Sec-WebSocket-Key` GUID of RFC 6455 §1.3.
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A `Sec-WebSocket-Key`: a nonce of 16 random bytes, in base64.
pub fn key(nonce: [u8; 16]) -> [u8; 24] {
    let mut out = [0u8; 24];
    base64(&nonce, &mut out);
    out
}

/// The `Sec-WebSocket-Accept` a server answers `key` with: the base64 of
/// the SHA-1 of the key and the GUID.
pub fn accept(key: &[u8]) -> [u8; 28] {
    let mut out = [0u8; 28];
    base64(&sha1(&[key, GUID]), &mut out);
    out
}

/// The request headers of an upgrade with `key` (the head writes `Host`).
pub fn headers(key: &[u8; 24]) -> [(&'static [u8], &[u8]); 4] {
    [
        (b"Connection", b"Upgrade"),
        (b"Upgrade", b"websocket"),
        (b"Sec-WebSocket-Version", b"13"),
        (b"Sec-WebSocket-Key", key),
    ]
}

/// Does the final head `head` (its bytes, [`super::Head::len`] of them,
/// for a response of `status`) switch to the WebSocket asked for with
/// `key`? A `101` with `Upgrade: websocket`, `Connection: upgrade` and
/// `Sec-WebSocket-Accept` for `key` (RFC 6455 §4.1's checks);
/// [`Error::Malformed`] otherwise (an answer of another status is the
/// caller's to report as that status).
pub fn switched(status: u16, head: &[u8], key: &[u8; 24]) -> Result<(), Error> {
    // `Upgrade` and `Sec-WebSocket-Accept` are single values: a second
    // line of either is refused, not read as the last one wins
    // (`Connection` is a list, its lines join).
    let (mut upgrade, mut connection, mut accepted) = (None, false, None);
    let once = |seen: &mut Option<bool>, now: bool| match seen.replace(now) {
        None => Ok(()),
        Some(_) => Err(Error::Malformed),
    };
    for (name, value) in header_lines(head) {
        if name.eq_ignore_ascii_case(b"upgrade") {
            once(&mut upgrade, value.eq_ignore_ascii_case(b"websocket"))?;
        } else if name.eq_ignore_ascii_case(b"connection") {
            let mut items = value;
            while let Some(t) = item(&mut items) {
                connection |= t.eq_ignore_ascii_case(b"upgrade");
            }
        } else if name.eq_ignore_ascii_case(b"sec-websocket-accept") {
            once(&mut accepted, value == accept(key))?;
        } else if name.eq_ignore_ascii_case(b"sec-websocket-extensions")
            || name.eq_ignore_ascii_case(b"sec-websocket-protocol")
        {
            // None was asked for: one the server chose cannot be spoken.
            return Err(Error::Malformed);
        }
    }
    if status == 101 && upgrade == Some(true) && connection && accepted == Some(true) {
        Ok(())
    } else {
        Err(Error::Malformed)
    }
}

/// Standard base64 with padding; `out` is exactly `4 * ceil(n / 3)`.
fn base64(input: &[u8], out: &mut [u8]) {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (group, o) in input.chunks(3).zip(out.chunks_mut(4)) {
        let b = [group[0], *group.get(1).unwrap_or(&0), *group.get(2).unwrap_or(&0)];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for (i, c) in o.iter_mut().enumerate() {
            *c = if i <= group.len() {
                ABC[(n >> (18 - 6 * i) & 63) as usize]
            } else {
                b'='
            };
        }
    }
}

/// SHA-1 (FIPS 180-4) of the concatenation of `parts`: only for the
/// handshake's key check, which RFC 6455 defines with it (not a security
/// measure: TLS is).
fn sha1(parts: &[&[u8]]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x6745_2301, 0xEFCD_AB89, 0x98BA_DCFE, 0x1032_5476, 0xC3D2_E1F0];
    let mut block = [0u8; 64];
    let mut n = 0;
    let mut len: u64 = 0;
    let mut put = |b: u8, h: &mut [u32; 5]| {
        block[n] = b;
        n += 1;
        if n == 64 {
            compress(h, &block);
            n = 0;
        }
    };
    for &b in parts.iter().flat_map(|p| p.iter()) {
        put(b, &mut h);
        len += 8;
    }
    put(0x80, &mut h);
    // Zeros up to 8 bytes short of a block's end, then the length in bits.
    let zeros = (64 + 56 - (len / 8 + 1) % 64) % 64;
    for _ in 0..zeros {
        put(0, &mut h);
    }
    for b in len.to_be_bytes() {
        put(b, &mut h);
    }
    let mut out = [0u8; 20];
    for (o, word) in out.chunks_mut(4).zip(h) {
        o.copy_from_slice(&word.to_be_bytes());
    }
    out
}

fn compress(h: &mut [u32; 5], block: &[u8; 64]) {
    let mut w = [0u32; 80];
    for (i, word) in block.chunks(4).enumerate() {
        w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
    }
    for i in 16..80 {
        w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
    }
    let [mut a, mut b, mut c, mut d, mut e] = *h;
    for (i, &wi) in w.iter().enumerate() {
        let (f, k) = match i {
            0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
            20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
            40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
            _ => (b ^ c ^ d, 0xCA62_C1D6),
        };
        let t = a
            .rotate_left(5)
            .wrapping_add(f)
            .wrapping_add(e)
            .wrapping_add(k)
            .wrapping_add(wi);
        (e, d, c, b, a) = (d, c, b.rotate_left(30), a, t);
    }
    for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
        *x = x.wrapping_add(y);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> heapless::String<40> {
        let mut s = heapless::String::new();
        for b in bytes {
            let _ = core::fmt::Write::write_fmt(&mut s, format_args!("{b:02x}"));
        }
        s
    }

    #[test]
    fn sha1_matches_fips_180_vectors() {
        assert_eq!(hex(&sha1(&[b""])), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(hex(&sha1(&[b"abc"])), "a9993e364706816aba3e25717850c26c9cd0d89d");
        // 56 bytes: the padding takes a second block.
        let two = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
        assert_eq!(hex(&sha1(&[two])), "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
        assert_eq!(hex(&sha1(&[&two[..10], &two[10..]])), hex(&sha1(&[two])));
        let million = [b'a'; 1000];
        let parts = [&million[..]; 1000];
        assert_eq!(hex(&sha1(&parts)), "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
    }

    #[test]
    fn base64_pads() {
        let mut out = [0u8; 8];
        base64(b"foob", &mut out);
        assert_eq!(&out, b"Zm9vYg==");
        let mut out = [0u8; 8];
        base64(b"fooba", &mut out);
        assert_eq!(&out, b"Zm9vYmE=");
        let mut out = [0u8; 4];
        base64(b"foo", &mut out);
        assert_eq!(&out, b"Zm9v");
    }

    #[test]
    fn switching_heads_are_checked() {
        let key = key(*b"the sample nonce");
        let ok = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        assert_eq!(switched(101, ok, &key), Ok(()));
        assert_eq!(switched(200, ok, &key), Err(Error::Malformed));
        let other = super::key(*b"another nonce 16");
        assert_eq!(
            switched(101, ok, &other),
            Err(Error::Malformed),
            "another key's accept"
        );
        for bad in [
            &b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"[..],
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
            // A second accept or upgrade line, the right one first or last.
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Accept: x\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
        ] {
            assert_eq!(
                switched(101, bad, &key),
                Err(Error::Malformed),
                "{:?}",
                core::str::from_utf8(bad)
            );
        }
        // `Connection` is a list: its lines join.
        let split = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: keep-alive\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        assert_eq!(switched(101, split, &key), Ok(()));
        let sent = headers(&key);
        assert_eq!(
            sent[3],
            (&b"Sec-WebSocket-Key"[..], &b"dGhlIHNhbXBsZSBub25jZQ=="[..])
        );
    }
}
